package bundle

import (
	"bytes"
	"regexp"
)

// Redacted replaces every secret Redact finds.
const Redacted = "[REDACTED]"

var (
	// A PEM block of any private key: RSA, EC, PKCS#8, OpenSSH, encrypted.
	pemKey = regexp.MustCompile(`(?s)-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)`)
	// A bearer credential in a header or a log line.
	bearerCred = regexp.MustCompile(`(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{4,}`)
	// A JSON Web Token wherever it appears (service account tokens are
	// JWTs): three base64url parts, the first an encoded JSON object.
	jwt = regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]+`)
	// A key that names a secret, and its value: YAML (`token: x`), JSON
	// (`"token":"x"`), slog text and flags (`token=x`, `--password=x`).
	// Kubeconfig's client-key-data and token, a password, an API key.
	// The password of a URL's userinfo (https://user:password@host).
	urlPassword = regexp.MustCompile(`(://[^/\s:@]*:)[^/\s@]+@`)
	secretKV    = regexp.MustCompile(`(?i)\b([A-Za-z0-9_-]*(?:token|password|passwd|secret|api-?key|client-key-data|private-?key)[A-Za-z0-9_-]*)(["']?[ \t]*[:=][ \t]*["']?)([^\s"',}\]]+)`)
)

// Redact returns b with the secrets it recognises replaced by Redacted:
// private keys in PEM, bearer and basic credentials, JSON Web Tokens, and
// a URL's password, the value of any key whose name says secret (token, password, secret,
// api key, client-key-data, private key). It keeps the key, so a reader
// sees that there was one. Every file of a bundle goes through it; it is
// the last line of defence, not the reason a source may include a
// secret: sources leave out kubeconfigs and Secrets altogether.
func Redact(b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	b = pemKey.ReplaceAll(b, []byte("-----BEGIN $1-----\n"+Redacted+"\n$2"))
	b = jwt.ReplaceAll(b, []byte(Redacted))
	b = bearerCred.ReplaceAll(b, []byte("$1$2"+Redacted))
	b = urlPassword.ReplaceAll(b, []byte("${1}"+Redacted+"@"))
	b = secretKV.ReplaceAllFunc(b, func(m []byte) []byte {
		sub := secretKV.FindSubmatch(m)
		if bytes.Equal(sub[3], []byte(Redacted)) || bytes.HasPrefix(sub[3], []byte("[REDACTED")) {
			return m
		}
		return append(append(append([]byte{}, sub[1]...), sub[2]...), Redacted...)
	})
	return b
}
