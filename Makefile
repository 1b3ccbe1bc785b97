# A thin front for magefile.go: `make <target>` runs the mage target of the
# same name through `go tool mage`, so mage need not be installed.
MAGE := go tool mage

.PHONY: build test lab lab-down lint bench deps kube-binaries images e2e-upstream netpol-api windows-test msi
build:         ; $(MAGE) build
test:          ; $(MAGE) test
lab:           ; $(MAGE) lab
lab-down:      ; $(MAGE) labDown
lint:          ; $(MAGE) lint
bench:         ; $(MAGE) bench
deps:          ; $(MAGE) deps
kube-binaries: ; $(MAGE) kubeBinaries
images:        ; $(MAGE) images
e2e-upstream:  ; $(MAGE) e2eUpstream
netpol-api:    ; $(MAGE) netpolAPI
windows-test:  ; $(MAGE) windowsTest
msi:           ; $(MAGE) msi
