package winpipe

import "testing"

func TestNameForPath(t *testing.T) {
	for _, tc := range []struct{ rundir, path, want string }{
		// The database socket as Antrea and OVS's own tools name it.
		{"", `C:\openvswitch\var\run\openvswitch\db.sock`, `\\.\pipe\C:openvswitchvarrunopenvswitchdb.sock`},
		{"", `C:/openvswitch/var/run/openvswitch/br-int.mgmt`, `\\.\pipe\C:openvswitchvarrunopenvswitchbr-int.mgmt`},
		// Relative paths are taken in the rundir.
		{"", `ovs-vswitchd.ctl`, `\\.\pipe\C:openvswitchvarrunopenvswitchovs-vswitchd.ctl`},
		{`D:\ovs\run`, `db.sock`, `\\.\pipe\D:ovsrundb.sock`},
		{`D:\ovs\run`, `sub/x.sock`, `\\.\pipe\D:ovsrunsubx.sock`},
	} {
		if got := NameForPath(tc.rundir, tc.path); got != tc.want {
			t.Errorf("NameForPath(%q, %q) = %q, want %q", tc.rundir, tc.path, got, tc.want)
		}
	}
}

func TestName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`\\.\pipe\C:openvswitchvarrunopenvswitchdb.sock`, `\\.\pipe\C:openvswitchvarrunopenvswitchdb.sock`},
		{`//./pipe/seine-test`, `\\.\pipe\seine-test`},
		{`\\.\PIPE\seine-test`, `\\.\pipe\seine-test`},
		{`seine-test`, `\\.\pipe\seine-test`},
	} {
		got, err := Name(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Name(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", `\\.\pipe\`, `\\server\pipe\x`, `//server/pipe/x`} {
		if got, err := Name(bad); err == nil {
			t.Errorf("Name(%q) = %q, want an error", bad, got)
		}
	}
}

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok, err  bool
	}{
		{`winpipe:\\.\pipe\x`, `\\.\pipe\x`, true, false},
		{`npipe://./pipe/x`, `\\.\pipe\x`, true, false},
		{`unix:C:\openvswitch\var\run\openvswitch\db.sock`, `\\.\pipe\C:openvswitchvarrunopenvswitchdb.sock`, true, false},
		{`unix:db.sock`, `\\.\pipe\C:openvswitchvarrunopenvswitchdb.sock`, true, false},
		{`unix:`, ``, true, true},
		{`winpipe:\\host\pipe\x`, ``, true, true},
		{`tcp:127.0.0.1:6640`, ``, false, false},
		{`nonsense`, ``, false, false},
	} {
		got, ok, err := Resolve(tc.in)
		if got != tc.want || ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("Resolve(%q) = %q, %v, %v; want %q, %v, error %v", tc.in, got, ok, err, tc.want, tc.ok, tc.err)
		}
	}
}
