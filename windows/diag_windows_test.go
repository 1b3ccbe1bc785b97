package windows

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/appctl"
)

// fakeVswitchd answers unixctl requests on one end of a pipe the way
// ovs-vswitchd does, and records the methods it was asked.
func fakeVswitchd(t *testing.T, replies map[string]string) (dial func(context.Context, string) (*appctl.Client, error), asked *[]string) {
	asked = new([]string)
	dial = func(_ context.Context, rundir string) (*appctl.Client, error) {
		if rundir != DefaultOVSRunDir {
			return nil, errors.New("unexpected rundir " + rundir)
		}
		client, server := net.Pipe()
		t.Cleanup(func() { server.Close() })
		go func() {
			dec, enc := json.NewDecoder(server), json.NewEncoder(server)
			for {
				var req struct {
					Method string `json:"method"`
					ID     any    `json:"id"`
				}
				if dec.Decode(&req) != nil {
					return
				}
				*asked = append(*asked, req.Method)
				reply := map[string]any{"id": req.ID, "result": nil, "error": nil}
				if out, ok := replies[req.Method]; ok {
					reply["result"] = out
				} else {
					reply["error"] = "\"" + req.Method + "\" is not a valid command"
				}
				if enc.Encode(reply) != nil {
					return
				}
			}
		}()
		return appctl.New(client), nil
	}
	return dial, asked
}

func TestCollect(t *testing.T) {
	ctx := context.Background()
	_, b := setUpNode(t)
	if _, err := b.Attach(ctx, podNet("c1", nsA)); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, hostState()); err != nil {
		t.Fatal(err)
	}
	dial, asked := fakeVswitchd(t, map[string]string{
		"version":   "ovs-vswitchd (Open vSwitch) 3.1.0\n",
		"dpif/show": "system@ovs-system: hit:0 missed:0\n  br-int:\n    br-int 65534/2: (internal)\n",
	})
	b.appctl = dial
	var out bytes.Buffer
	if err := b.Collect(ctx, &out); err != nil {
		t.Fatalf("Collect: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		"== HNS networks ==\n[\n  {\n    \"ID\": \"net-1\",\n    \"Name\": \"seine\",\n    \"Type\": \"Transparent\"",
		"== HNS endpoints of network seine ==\n[\n  {\n    \"ID\": \"ep-2\",\n    \"Name\": \"seine_default_web-0_c1_eth0\"",
		"== interfaces ==\n11: \"Ethernet0\" mtu 1500 " + fakeMAC("Ethernet0").String() + " []\n",
		"== routes (metric 83 is Seine's) ==\n",
		"10.244.2.0/24 via 10.244.2.1 if 15 metric 83\n",
		"== permanent neighbours ==\n169.254.0.253 lladdr aa:bb:cc:dd:ee:ff if 15\n",
		"== WinNAT instances ==\nseine-10.244.1.0_24 internal 10.244.1.0/24 external 192.168.1.11/32\n",
		"== ovs-vswitchd version ==\novs-vswitchd (Open vSwitch) 3.1.0\n",
		"== ovs-vswitchd dpif/show ==\nsystem@ovs-system",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("support bundle lacks %q:\n%s", want, text)
		}
	}
	if got := strings.Join(*asked, ","); got != "version,dpif/show" {
		t.Errorf("asked ovs-vswitchd %s", got)
	}
}

func TestCollectWritesWhatItCan(t *testing.T) {
	ctx := context.Background()
	h, b := setUpNode(t)
	h.FailNext("Endpoints", errors.New("HNS is restarting"))
	var out bytes.Buffer
	err := b.Collect(ctx, &out)
	if err == nil {
		t.Fatal("Collect reported no error")
	}
	for _, want := range []string{"HNS is restarting", "no ovs-vswitchd on the fake host"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Collect error %q lacks %q", err, want)
		}
	}
	text := out.String()
	for _, want := range []string{
		"== HNS endpoints of network seine ==\nerror: HNS is restarting\n",
		"== ovs-vswitchd ==\nerror: connect in " + DefaultOVSRunDir + ": no ovs-vswitchd on the fake host\n",
		"0.0.0.0/0 via 192.168.1.1 if 14 metric 0\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("support bundle lacks %q:\n%s", want, text)
		}
	}
}
