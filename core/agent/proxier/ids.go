package proxier

import (
	"hash/fnv"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/proxy"
)

// portIDs gives every Service port an ID in 1..MaxServicePortID, unique on
// the node, from a hash of its name (probing on a collision), so a
// restarted agent mostly gives a port the same ID (and groups) again.
type portIDs struct {
	bySvc map[string]map[string]uint32 // service key -> port key -> ID
	used  map[uint32]bool
}

func newPortIDs() *portIDs {
	return &portIDs{bySvc: map[string]map[string]uint32{}, used: map[uint32]bool{}}
}

// assign returns the IDs of s's ports, taking new ones where needed.
func (p *portIDs) assign(s *proxy.Service) map[string]uint32 {
	k := s.Key()
	have := p.bySvc[k]
	if have == nil {
		have = map[string]uint32{}
		p.bySvc[k] = have
	}
	out := make(map[string]uint32, len(s.Ports))
	for i := range s.Ports {
		pk := s.Ports[i].Key()
		id, ok := have[pk]
		if !ok {
			h := fnv.New32a()
			h.Write([]byte(k + "|" + pk))
			id = h.Sum32()%pipeline.MaxServicePortID + 1
			for p.used[id] {
				id = id%pipeline.MaxServicePortID + 1
			}
			p.used[id] = true
			have[pk] = id
		}
		out[pk] = id
	}
	return out
}

// release frees the IDs of Service k's ports not in keep (all with nil).
func (p *portIDs) release(k string, keep map[string]uint32) {
	have := p.bySvc[k]
	for pk, id := range have {
		if keep == nil || keep[pk] != id {
			delete(have, pk)
			delete(p.used, id)
		}
	}
	if len(have) == 0 {
		delete(p.bySvc, k)
	}
}
