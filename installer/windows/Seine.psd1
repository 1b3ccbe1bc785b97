@{
    RootModule        = 'Seine.psm1'
    ModuleVersion     = '0.1.0'
    GUID              = '3f6b2c1e-8d4a-4f0e-9b7c-2a5d1e6f8c90'
    Author            = 'Seine'
    Description       = 'Thin wrappers over seinectl for Seine on Windows nodes.'
    PowerShellVersion = '5.1'
    FunctionsToExport = @('Test-SeineInstall', 'Initialize-SeineNode', 'Get-SeineDiagnostics', 'Get-SeineClusterDiagnostics')
    CmdletsToExport   = @()
    VariablesToExport = @()
    AliasesToExport   = @()
}
