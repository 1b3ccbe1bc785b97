# Seine's PowerShell module: thin wrappers over seinectl for the commands a
# Windows admin runs by hand. No logic lives here; each function runs one
# seinectl subcommand and fails when it fails.

$ErrorActionPreference = 'Stop'

# The MSI records where it installed seinectl.
$script:Seinectl = Join-Path (Get-ItemPropertyValue -Path 'HKLM:\SOFTWARE\Seine' -Name 'InstallDir') 'seinectl.exe'

function Invoke-Seinectl {
    param([Parameter(Mandatory)][string[]]$Arguments)
    & $script:Seinectl @Arguments
    if ($LASTEXITCODE -ne 0) {
        throw "seinectl $($Arguments -join ' ') failed with exit code $LASTEXITCODE"
    }
}

<#
.SYNOPSIS
Checks that this node can run Seine (seinectl check).
#>
function Test-SeineInstall {
    [CmdletBinding()]
    param()
    Invoke-Seinectl -Arguments @('check')
}

<#
.SYNOPSIS
Prepares this node for Seine: Windows features, Open vSwitch, the HNS network (seinectl node-prep).
#>
function Initialize-SeineNode {
    [CmdletBinding()]
    param()
    Invoke-Seinectl -Arguments @('node-prep')
}

<#
.SYNOPSIS
Writes a support bundle of this node to a file (seinectl bundle -o <file>).
#>
function Get-SeineDiagnostics {
    [CmdletBinding()]
    param([Parameter(Mandatory)][string]$OutFile)
    Invoke-Seinectl -Arguments @('bundle', '-o', $OutFile)
}

<#
.SYNOPSIS
Writes a support bundle of the whole cluster into a directory: seine-controller and every selected node's agent, Linux and Windows (seinectl supportbundle -d <dir>). -Selector picks nodes by label, -Since limits logs (e.g. 1h; 0s: all), -Kubeconfig names the cluster (default: $env:KUBECONFIG, ~\.kube\config).
#>
function Get-SeineClusterDiagnostics {
    [CmdletBinding()]
    param([Parameter(Mandatory)][string]$Directory, [string]$Selector = '', [string]$Since = '0s', [string]$Kubeconfig = '')
    Invoke-Seinectl -Arguments @('supportbundle', '-d', $Directory, '-l', $Selector, '--since', $Since, '--kubeconfig', $Kubeconfig)
}

Export-ModuleMember -Function Test-SeineInstall, Initialize-SeineNode, Get-SeineDiagnostics, Get-SeineClusterDiagnostics
