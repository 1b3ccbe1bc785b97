package auditlog

// DefaultPath is the policy audit log on a Windows node: in the agent's log
// directory (the MSI's LOGDIR).
const DefaultPath = `C:\ProgramData\Seine\logs\networkpolicy\np.log`
