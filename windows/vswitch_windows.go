package windows

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/seine-cni/seine/windows/internal/winapi"
)

// hnsV1VSwitch is the real vswitchAPI. HNS's v1 API reports and changes the
// switch extensions of a network's vSwitch ("Extensions" of
// /networks/<id>); hcn's v2 types do not model them.
type hnsV1VSwitch struct{}

// v1Extension is one entry of a v1 network's Extensions.
type v1Extension struct {
	ID        string `json:"Id"`
	Name      string `json:",omitempty"`
	IsEnabled bool
}

type v1Network struct {
	Extensions []v1Extension `json:",omitempty"`
}

func (hnsV1VSwitch) ExtensionEnabled(ctx context.Context, networkID, extensionID string) (bool, error) {
	if err := ctxErr(ctx, "read vSwitch extensions"); err != nil {
		return false, err
	}
	var n v1Network
	if err := hnsV1Call("GET", "/networks/"+networkID, "", &n); err != nil {
		return false, err
	}
	for _, e := range n.Extensions {
		if strings.EqualFold(e.ID, extensionID) {
			return e.IsEnabled, nil
		}
	}
	return false, nil
}

func (hnsV1VSwitch) EnableExtension(ctx context.Context, networkID, extensionID string) error {
	if err := ctxErr(ctx, "enable vSwitch extension"); err != nil {
		return err
	}
	req, err := json.Marshal(v1Network{Extensions: []v1Extension{{ID: extensionID, IsEnabled: true}}})
	if err != nil {
		return err
	}
	return hnsV1Call("POST", "/networks/"+networkID, string(req), nil)
}

// hnsV1Call makes one HNS v1 request and decodes the response's Output
// into out (when not nil).
func hnsV1Call(method, path, request string, out any) error {
	if err := hnsAvailable(modVMCompute); err != nil {
		return err
	}
	m, err := windows.UTF16PtrFromString(method)
	if err != nil {
		return err
	}
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return err
	}
	r, err := windows.UTF16PtrFromString(request)
	if err != nil {
		return err
	}
	var resp *uint16
	hr := winapi.HNSCall(m, p, r, &resp)
	var text string
	if resp != nil {
		text = windows.UTF16PtrToString(resp)
		windows.CoTaskMemFree(unsafe.Pointer(resp))
	}
	if hr != nil {
		return fmt.Errorf("HNS %s %s: %w", method, path, hr)
	}
	var envelope struct {
		Success bool
		Error   string
		Output  json.RawMessage
	}
	if err := json.Unmarshal([]byte(text), &envelope); err != nil {
		return fmt.Errorf("HNS %s %s: response %q: %w", method, path, text, err)
	}
	if !envelope.Success {
		return fmt.Errorf("HNS %s %s: %s", method, path, envelope.Error)
	}
	if out == nil || len(envelope.Output) == 0 {
		return nil
	}
	if err := json.Unmarshal(envelope.Output, out); err != nil {
		return fmt.Errorf("HNS %s %s: output: %w", method, path, err)
	}
	return nil
}
