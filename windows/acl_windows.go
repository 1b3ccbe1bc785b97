package windows

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"
)

// DirACL sets and checks who may use Seine's directories on a Windows node
// (C:\ProgramData\Seine: the agent's kubeconfig, its state, the CNI socket
// and the spool of DELs the agent replays as SYSTEM; the CNI directories
// the runtime reads plugins and configurations from). The default ACL of
// C:\ProgramData lets every local user create files in a new subdirectory
// and read them; that of C:\ lets authenticated users modify what is
// created below it. DirACL replaces both with Seine's:
//
//   - owner BUILTIN\Administrators (a directory a user created first, to
//     squat it, is no longer theirs);
//   - a protected DACL (nothing inherited from the parent): full control
//     for SYSTEM and Administrators and, for a public directory, read and
//     execute for Users; private directories have nothing else;
//   - every file and subdirectory inherits it (explicit ACEs are removed
//     and its owner reset), so a file someone put there earlier is covered.
//
// nodecheck.WindowsHost applies it for a mode: one without group or other
// bits is private. The MSI sets the same SDDL on the folders it creates
// (installer/windows/msi.Locks), `seinectl node-prep` sets it (and resets
// the children), `seinectl check` verifies it. Ensure reads the result back
// and fails if it did not take (Wine accepts the change and keeps nothing).
type DirACL struct {
	sec fileSecurity // nil: the Win32 API
}

// fileSecurity reads and writes the owner and DACL of files and
// directories.
type fileSecurity interface {
	Get(path string) (*windows.SECURITY_DESCRIPTOR, error)
	// Set applies sd's owner and DACL; protection is
	// PROTECTED_DACL_SECURITY_INFORMATION (inherit nothing) or
	// UNPROTECTED_DACL_SECURITY_INFORMATION (add the parent's inheritable
	// ACEs).
	Set(path string, sd *windows.SECURITY_DESCRIPTOR, protection windows.SECURITY_INFORMATION) error
}

// win32Security is the real fileSecurity.
type win32Security struct{}

func (win32Security) Get(path string) (*windows.SECURITY_DESCRIPTOR, error) {
	return windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION)
}

func (win32Security) Set(path string, sd *windows.SECURITY_DESCRIPTOR, protection windows.SECURITY_INFORMATION) error {
	owner, _, err := sd.Owner()
	if err != nil {
		return err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return err
	}
	return windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION|protection, owner, nil, dacl, nil)
}

func (d DirACL) api() fileSecurity {
	if d.sec == nil {
		return win32Security{}
	}
	return d.sec
}

const (
	sddlPrivate = "O:BAD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
	sddlPublic  = "O:BAD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1200a9;;;BU)"
	// sddlInherit is a child's: owned by Administrators, no explicit ACE,
	// everything from its parent.
	sddlInherit = "O:BAD:AI"
	// readExecute is FILE_GENERIC_READ | FILE_GENERIC_EXECUTE, what Users
	// get on a public directory.
	readExecute = 0x1200a9
	// fileAllAccess is FILE_ALL_ACCESS ("FA").
	fileAllAccess = 0x1f01ff
)

// Ensure gives dir (which must exist) Seine's security, and resets its
// children to inherit it. It reports whether anything was different.
func (d DirACL) Ensure(dir string, private bool) (bool, error) {
	sec := d.api()
	problems, err := dirProblems(sec, dir, private)
	if err != nil {
		return false, err
	}
	children, err := childProblems(sec, dir)
	if err != nil {
		return false, err
	}
	if len(problems) == 0 && len(children) == 0 {
		return false, nil
	}
	sddl := sddlPublic
	if private {
		sddl = sddlPrivate
	}
	if err := setSecurity(sec, dir, sddl, windows.PROTECTED_DACL_SECURITY_INFORMATION); err != nil {
		return true, err
	}
	for _, c := range children {
		if err := setSecurity(sec, c, sddlInherit, windows.UNPROTECTED_DACL_SECURITY_INFORMATION); err != nil {
			return true, err
		}
	}
	if err := d.Check(dir, private); err != nil {
		return true, fmt.Errorf("the ACL did not take: %w", err)
	}
	return true, nil
}

// Check reports, changing nothing, how dir's and its children's security
// differ from what Ensure sets.
func (d DirACL) Check(dir string, private bool) error {
	sec := d.api()
	problems, err := dirProblems(sec, dir, private)
	if err != nil {
		return err
	}
	children, err := childProblems(sec, dir)
	if err != nil {
		return err
	}
	for _, c := range children {
		problems = append(problems, c+" does not only inherit the directory's access")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %s", dir, strings.Join(problems, "; "))
	}
	return nil
}

func setSecurity(sec fileSecurity, path, sddl string, protection windows.SECURITY_INFORMATION) error {
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return fmt.Errorf("security descriptor %s: %w", sddl, err)
	}
	if err := sec.Set(path, sd, protection); err != nil {
		return fmt.Errorf("set the security of %s: %w", path, err)
	}
	return nil
}

// ace is one entry of a DACL.
type ace struct {
	allow     bool
	inherited bool
	mask      uint32
	sid       *windows.SID
}

// security reads path's owner, whether its DACL is protected, and its ACEs.
func security(sec fileSecurity, path string) (owner *windows.SID, protected bool, aces []ace, err error) {
	sd, err := sec.Get(path)
	if err != nil {
		return nil, false, nil, fmt.Errorf("read the security of %s: %w", path, err)
	}
	owner, _, err = sd.Owner()
	if err != nil {
		return nil, false, nil, fmt.Errorf("owner of %s: %w", path, err)
	}
	control, _, err := sd.Control()
	if err != nil {
		return nil, false, nil, fmt.Errorf("security of %s: %w", path, err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return nil, false, nil, fmt.Errorf("DACL of %s: %w", path, err)
	}
	if dacl == nil {
		// A NULL DACL grants everyone everything.
		return owner, control&windows.SE_DACL_PROTECTED != 0, []ace{{allow: true, mask: 0xffffffff, sid: everyone()}}, nil
	}
	for i := range uint32(dacl.AceCount) {
		var a *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &a); err != nil {
			return nil, false, nil, fmt.Errorf("ACE %d of %s: %w", i, path, err)
		}
		// Allowed and denied ACEs have the same layout; other types
		// (audit, object ACEs) do not grant file access here.
		switch a.Header.AceType {
		case windows.ACCESS_ALLOWED_ACE_TYPE, windows.ACCESS_DENIED_ACE_TYPE:
			aces = append(aces, ace{
				allow:     a.Header.AceType == windows.ACCESS_ALLOWED_ACE_TYPE,
				inherited: a.Header.AceFlags&windows.INHERITED_ACE != 0,
				mask:      uint32(a.Mask),
				sid:       (*windows.SID)(unsafe.Pointer(&a.SidStart)),
			})
		}
	}
	return owner, control&windows.SE_DACL_PROTECTED != 0, aces, nil
}

func everyone() *windows.SID {
	sid, _ := windows.CreateWellKnownSid(windows.WinWorldSid)
	return sid
}

func trusted(sid *windows.SID) bool {
	return sid.IsWellKnown(windows.WinLocalSystemSid) || sid.IsWellKnown(windows.WinBuiltinAdministratorsSid)
}

// grantProblems lists the ACEs that give anyone but SYSTEM and
// Administrators more than public directories allow (read and execute for
// anyone), or anything at all when private.
func grantProblems(aces []ace, private bool) []string {
	var out []string
	for _, a := range aces {
		if !a.allow || trusted(a.sid) {
			continue
		}
		if private || a.mask&^readExecute != 0 {
			out = append(out, fmt.Sprintf("grants %s access %#x", a.sid, a.mask))
		}
	}
	return out
}

// dirProblems lists how dir's own security differs from Seine's.
func dirProblems(sec fileSecurity, dir string, private bool) ([]string, error) {
	owner, protected, aces, err := security(sec, dir)
	if err != nil {
		return nil, err
	}
	var out []string
	if !trusted(owner) {
		out = append(out, fmt.Sprintf("owned by %s, not Administrators or SYSTEM", owner))
	}
	if !protected {
		out = append(out, "its access is inherited from its parent")
	}
	out = append(out, grantProblems(aces, private)...)
	for _, want := range []windows.WELL_KNOWN_SID_TYPE{windows.WinLocalSystemSid, windows.WinBuiltinAdministratorsSid} {
		full := false
		for _, a := range aces {
			full = full || (a.allow && a.sid.IsWellKnown(want) && a.mask&fileAllAccess == fileAllAccess)
		}
		if !full {
			sid, _ := windows.CreateWellKnownSid(want)
			out = append(out, fmt.Sprintf("%s lacks full control", sid))
		}
	}
	return out, nil
}

// childProblems lists dir's files and subdirectories that do not simply
// inherit dir's security: an owner other than Administrators or SYSTEM, a
// protected DACL, or an explicit ACE granting anyone else anything.
func childProblems(sec fileSecurity, dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if path == dir {
			return nil
		}
		owner, protected, aces, err := security(sec, path)
		if err != nil {
			return err
		}
		var explicit []ace
		for _, a := range aces {
			if !a.inherited {
				explicit = append(explicit, a)
			}
		}
		if !trusted(owner) || protected || len(grantProblems(explicit, true)) > 0 {
			out = append(out, path)
		}
		return nil
	})
	return out, err
}
