package msi

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// wxs is the part of the WiX source these tests read.
type wxs struct {
	Properties []struct {
		ID string `xml:"Id,attr"`
	} `xml:"Product>Property"`
	Files    []wxsFile `xml:"Product>DirectoryRef>Component>File"`
	Services []struct {
		Name      string `xml:"Name,attr"`
		Start     string `xml:"Start,attr"`
		Arguments string `xml:"Arguments,attr"`
	} `xml:"Product>DirectoryRef>Component>ServiceInstall"`
	Controls []struct {
		Name   string `xml:"Name,attr"`
		Stop   string `xml:"Stop,attr"`
		Remove string `xml:"Remove,attr"`
	} `xml:"Product>DirectoryRef>Component>ServiceControl"`
	Actions []struct {
		ID         string `xml:"Id,attr"`
		FileKey    string `xml:"FileKey,attr"`
		ExeCommand string `xml:"ExeCommand,attr"`
	} `xml:"Product>CustomAction"`
}

type wxsFile struct {
	ID     string `xml:"Id,attr"`
	Source string `xml:"Source,attr"`
}

func readWXS(t *testing.T) wxs {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "seine.wxs"))
	if err != nil {
		t.Fatal(err)
	}
	var w wxs
	if err := xml.Unmarshal(b, &w); err != nil {
		t.Fatalf("seine.wxs: %v", err)
	}
	return w
}

// TestWXSFiles: every file the MSI takes is one BuildMSI stages, and every
// staged file is in the MSI.
func TestWXSFiles(t *testing.T) {
	w := readWXS(t)
	staged := append([]string(nil), Sources...)
	for f := range generated {
		staged = append(staged, f)
	}
	for _, b := range required {
		staged = append(staged, b+".exe")
	}
	for _, b := range optional {
		staged = append(staged, b.name+".exe")
	}
	var sources []string
	for _, f := range w.Files {
		sources = append(sources, f.Source)
		if !slices.Contains(staged, f.Source) {
			t.Errorf("seine.wxs takes %s, which BuildMSI does not stage", f.Source)
		}
	}
	for _, s := range staged {
		if s != "seine.wxs" && !slices.Contains(sources, s) {
			t.Errorf("BuildMSI stages %s but seine.wxs does not install it", s)
		}
	}
}

// TestWXSService: the service the MSI registers is the one seine-agent
// manages, runs `seine-agent run`, starts with Windows and goes with the
// product; its custom actions run seine-agent subcommands with declared
// properties only.
func TestWXSService(t *testing.T) {
	w := readWXS(t)
	if len(w.Services) != 1 || w.Services[0].Name != "seine-agent" || w.Services[0].Start != "auto" ||
		!strings.HasPrefix(w.Services[0].Arguments, "run --config ") {
		t.Errorf("ServiceInstall %+v, want seine-agent, auto start, run --config", w.Services)
	}
	if len(w.Controls) != 1 || w.Controls[0].Name != "seine-agent" || w.Controls[0].Remove != "uninstall" || w.Controls[0].Stop != "both" {
		t.Errorf("ServiceControl %+v, want seine-agent stopped on install and removal, removed on uninstall", w.Controls)
	}
	declared := map[string]bool{}
	for _, p := range w.Properties {
		declared[p.ID] = true
	}
	// Directories are properties too; these are seine.wxs's own.
	for _, d := range []string{"INSTALLDIR", "CNIBINDIR", "DATADIR", "LOGDIR"} {
		declared[d] = true
	}
	ref := regexp.MustCompile(`\[([A-Za-z0-9_.]+)\]`)
	subcommands := map[string]bool{}
	for _, a := range w.Actions {
		if a.FileKey != "SeineAgentExe" {
			t.Errorf("custom action %s runs %s, want seine-agent.exe", a.ID, a.FileKey)
		}
		subcommands[strings.Fields(a.ExeCommand)[0]] = true
		for _, m := range ref.FindAllStringSubmatch(a.ExeCommand, -1) {
			if !declared[m[1]] {
				t.Errorf("custom action %s uses [%s], which seine.wxs does not declare", a.ID, m[1])
			}
		}
	}
	for _, want := range []string{"configure", "recovery", "purge"} {
		if !subcommands[want] {
			t.Errorf("no custom action runs seine-agent %s", want)
		}
	}
}

// TestPowerShellModule: the module's functions are thin wrappers, each
// running exactly one seinectl subcommand, and it runs nothing else.
func TestPowerShellModule(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "Seine.psm1"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"Test-SeineInstall":    "check",
		"Initialize-SeineNode": "node-prep",
		"Get-SeineDiagnostics": "bundle -o $OutFile",
		// The cluster mode: seine-controller and every node's agent.
		"Get-SeineClusterDiagnostics": "supportbundle -d $Directory -l $Selector --since $Since --kubeconfig $Kubeconfig",
	}
	funcs := psFunctions(string(b))
	got := map[string]string{}
	for name, body := range funcs {
		if name == "Invoke-Seinectl" {
			continue
		}
		calls := regexp.MustCompile(`Invoke-Seinectl -Arguments @\(([^)]*)\)`).FindAllStringSubmatch(body, -1)
		if len(calls) != 1 {
			t.Errorf("%s makes %d seinectl calls, want 1:\n%s", name, len(calls), body)
			continue
		}
		var args []string
		for _, a := range strings.Split(calls[0][1], ",") {
			args = append(args, strings.Trim(strings.TrimSpace(a), "'"))
		}
		got[name] = strings.Join(args, " ")
		// Nothing else runs: each line is the binding attribute, a
		// one-line param block or the call.
		for line := range strings.Lines(body) {
			line = strings.TrimSpace(line)
			switch {
			case line == "", line == "[CmdletBinding()]", line == calls[0][0]:
			case strings.HasPrefix(line, "param(") && strings.HasSuffix(line, ")") && !strings.Contains(line, "$("):
			default:
				t.Errorf("%s does more than call seinectl: %q", name, line)
			}
		}
	}
	for name, args := range want {
		if got[name] != args {
			t.Errorf("%s runs seinectl %q, want %q", name, got[name], args)
		}
	}
	if len(got) != len(want) {
		t.Errorf("module functions %v, want exactly %v", keys(got), keys(want))
	}
	// The helper itself runs seinectl and nothing else.
	helper := funcs["Invoke-Seinectl"]
	if !strings.Contains(helper, "& $script:Seinectl @Arguments") {
		t.Errorf("Invoke-Seinectl does not run seinectl:\n%s", helper)
	}
	for _, banned := range []string{"Invoke-Expression", "Start-Process", "iex ", "New-NetNat", "Get-HnsNetwork", "hnsdiag", "netsh", "sc.exe"} {
		if strings.Contains(string(b), banned) {
			t.Errorf("Seine.psm1 contains %q: logic belongs in seinectl", banned)
		}
	}
	// The manifest exports exactly the three functions.
	psd, err := os.ReadFile(filepath.Join("..", "Seine.psd1"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`FunctionsToExport\s*=\s*@\(([^)]*)\)`).FindStringSubmatch(string(psd))
	if m == nil {
		t.Fatal("Seine.psd1 has no FunctionsToExport")
	}
	var exported []string
	for _, f := range strings.Split(m[1], ",") {
		exported = append(exported, strings.Trim(strings.TrimSpace(f), "'"))
	}
	slices.Sort(exported)
	if w := keys(want); !slices.Equal(exported, w) {
		t.Errorf("Seine.psd1 exports %v, want %v", exported, w)
	}
	if !strings.Contains(string(psd), "RootModule        = 'Seine.psm1'") {
		t.Error("Seine.psd1's RootModule is not Seine.psm1")
	}
}

// psFunctions maps each `function Name { ... }` of a PowerShell script to
// its body, matching braces (the module has no braces inside strings).
func psFunctions(src string) map[string]string {
	out := map[string]string{}
	re := regexp.MustCompile(`(?m)^function ([A-Za-z-]+) \{`)
	for _, loc := range re.FindAllStringSubmatchIndex(src, -1) {
		name := src[loc[2]:loc[3]]
		depth, i := 1, loc[1]
		for ; i < len(src) && depth > 0; i++ {
			switch src[i] {
			case '{':
				depth++
			case '}':
				depth--
			}
		}
		out[name] = src[loc[1] : i-1]
	}
	return out
}

func keys(m map[string]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}
