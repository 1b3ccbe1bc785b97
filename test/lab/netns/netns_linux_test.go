package netns

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/test/ci"
)

func requireRoot(t *testing.T) {
	t.Helper()
	ci.RequireRoot(t, "creating network namespaces (CAP_SYS_ADMIN)")
}

func TestCreateDoRemove(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "sub", "ns1")
	t.Cleanup(func() { _ = Remove(path) })

	if err := Create(path); err != nil {
		t.Fatal(err)
	}
	if !Exists(path) {
		t.Fatalf("%s is not a netns after Create", path)
	}
	if err := Create(path); err == nil {
		t.Fatal("second Create on the same path succeeded")
	}

	var inode, hostInode uint64
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	hostInode = st.Ino
	var loFlags uint16
	err := Do(path, func() error {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		inode = st.Ino
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return err
		}
		loFlags = ifr.Uint16()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if inode == hostInode {
		t.Fatal("Do ran in the caller's namespace")
	}
	if loFlags&unix.IFF_UP == 0 {
		t.Fatal("lo is not up in the new namespace")
	}

	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("%s still exists after Remove: %v", path, err)
	}
	if err := Remove(path); err != nil {
		t.Fatalf("Remove of an absent namespace: %v", err)
	}
}

func TestDoEmptyPathRunsInPlace(t *testing.T) {
	ran := false
	if err := Do("", func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Do(\"\") ran=%v err=%v", ran, err)
	}
}

func TestDoMissingNamespace(t *testing.T) {
	if err := Do(filepath.Join(t.TempDir(), "absent"), func() error { return nil }); err == nil {
		t.Fatal("Do on a missing namespace succeeded")
	}
}
