package auditlog

// DefaultPath is the policy audit log on a Linux node.
const DefaultPath = "/var/log/seine/networkpolicy/np.log"
