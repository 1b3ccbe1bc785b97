// Package msitest installs Seine's MSI under Wine and checks what it did:
// files, the configuration written from the installer's properties, the
// registry, the seine-agent service (which, Wine having no Host Network
// Service, must stop with that reason in its log), and that removal leaves
// nothing behind. The test is Linux-only (msitest_linux_test.go); see
// README.md.
package msitest
