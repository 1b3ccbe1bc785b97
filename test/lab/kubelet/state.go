package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Sandbox states. A record is written before the namespace is created and CNI ADD runs,
// so a crash at any point leaves something the next run can tear down.
const (
	stateCreating = "creating" // namespace and CNI ADD under way or failed
	stateRunning  = "running"  // CNI ADD succeeded
)

// record is what the kubelet keeps on disk per pod sandbox: enough to adopt it after a
// restart or to run CNI DEL without the pod object.
type sandboxRecord struct {
	UID         types.UID `json:"uid"`
	Namespace   string    `json:"namespace"`
	Name        string    `json:"name"`
	ContainerID string    `json:"containerID"`
	HostNetwork bool      `json:"hostNetwork,omitempty"`
	NetNS       string    `json:"netns,omitempty"`
	Network     string    `json:"network,omitempty"` // CNI network name used for ADD
	IPs         []string  `json:"ips,omitempty"`
	State       string    `json:"state"`
	Created     time.Time `json:"created"`
}

type stateStore struct{ dir string }

func openState(dir string) (*stateStore, error) {
	s := &stateStore{dir: dir}
	if err := os.MkdirAll(s.podsDir(), 0o700); err != nil {
		return nil, fmt.Errorf("kubelet state dir: %w", err)
	}
	return s, nil
}

func (s *stateStore) podsDir() string     { return filepath.Join(s.dir, "pods") }
func (s *stateStore) cniCacheDir() string { return filepath.Join(s.dir, "cni") }

func (s *stateStore) path(uid types.UID) string {
	return filepath.Join(s.podsDir(), string(uid)+".json")
}

// save writes rec atomically.
func (s *stateStore) save(rec *sandboxRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("save pod record %s: %w", rec.UID, err)
	}
	tmp := s.path(rec.UID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save pod record %s: %w", rec.UID, err)
	}
	if err := os.Rename(tmp, s.path(rec.UID)); err != nil {
		return fmt.Errorf("save pod record %s: %w", rec.UID, err)
	}
	return nil
}

func (s *stateStore) load(uid types.UID) (*sandboxRecord, error) {
	b, err := os.ReadFile(s.path(uid))
	if err != nil {
		return nil, fmt.Errorf("pod record %s: %w", uid, err)
	}
	var rec sandboxRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("pod record %s: %w", uid, err)
	}
	return &rec, nil
}

func (s *stateStore) remove(uid types.UID) error {
	if err := os.Remove(s.path(uid)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove pod record %s: %w", uid, err)
	}
	return nil
}

// all returns every record on disk.
func (s *stateStore) all() ([]*sandboxRecord, error) {
	entries, err := os.ReadDir(s.podsDir())
	if err != nil {
		return nil, fmt.Errorf("read pod records: %w", err)
	}
	var recs []*sandboxRecord
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		rec, err := s.load(types.UID(name))
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
	return recs, nil
}
