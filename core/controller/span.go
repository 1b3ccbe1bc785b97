package controller

import (
	"math/bits"
	"slices"
	"sync"
)

// nodeTable interns node names as small integers so that a span is a bitmap:
// a thousand nodes cost 125 bytes per span, and a union is a loop of ORs.
// Node names are never forgotten; clusters have a bounded number of nodes.
type nodeTable struct {
	mu    sync.RWMutex
	ids   map[string]int32
	names []string
}

func newNodeTable() *nodeTable { return &nodeTable{ids: make(map[string]int32)} }

func (t *nodeTable) id(name string) int32 {
	t.mu.RLock()
	id, ok := t.ids[name]
	t.mu.RUnlock()
	if ok {
		return id
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.ids[name]; ok {
		return id
	}
	id = int32(len(t.names))
	t.ids[name] = id
	t.names = append(t.names, name)
	return id
}

func (t *nodeTable) lookup(name string) (int32, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	id, ok := t.ids[name]
	return id, ok
}

func (t *nodeTable) name(id int32) string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.names[id]
}

// Span is the set of nodes that need an object. A Span is immutable once
// handed out, so objects with the same span share one value.
type Span struct {
	nodes *nodeTable
	bits  []uint64
}

// Has reports whether node is in the span.
func (s *Span) Has(node string) bool {
	if s == nil {
		return false
	}
	id, ok := s.nodes.lookup(node)
	if !ok {
		return false
	}
	w := int(id / 64)
	return w < len(s.bits) && s.bits[w]&(1<<(uint(id)%64)) != 0
}

// Len is the number of nodes in the span.
func (s *Span) Len() int {
	if s == nil {
		return 0
	}
	n := 0
	for _, w := range s.bits {
		n += bits.OnesCount64(w)
	}
	return n
}

// Nodes returns the span's node names, sorted.
func (s *Span) Nodes() []string {
	if s == nil {
		return nil
	}
	var out []string
	for i, w := range s.bits {
		for w != 0 {
			b := bits.TrailingZeros64(w)
			out = append(out, s.nodes.name(int32(i*64+b)))
			w &^= 1 << uint(b)
		}
	}
	slices.Sort(out)
	return out
}

func (s *Span) equal(o *Span) bool {
	if s == o {
		return true
	}
	var a, b []uint64
	if s != nil {
		a = s.bits
	}
	if o != nil {
		b = o.bits
	}
	return slices.Equal(trimZeros(a), trimZeros(b))
}

func trimZeros(b []uint64) []uint64 {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// spanBuilder accumulates node ids into a new Span.
type spanBuilder struct {
	nodes *nodeTable
	bits  []uint64
}

func (b *spanBuilder) add(id int32) {
	if id < 0 {
		return
	}
	w := int(id / 64)
	if w >= len(b.bits) {
		b.bits = append(b.bits, make([]uint64, w+1-len(b.bits))...)
	}
	b.bits[w] |= 1 << (uint(id) % 64)
}

func (b *spanBuilder) union(s *Span) {
	if s == nil {
		return
	}
	if len(s.bits) > len(b.bits) {
		b.bits = append(b.bits, make([]uint64, len(s.bits)-len(b.bits))...)
	}
	for i, w := range s.bits {
		b.bits[i] |= w
	}
}

// unionOf returns the span holding the nodes of every span given.
func unionOf(nodes *nodeTable, spans ...*Span) *Span {
	b := spanBuilder{nodes: nodes}
	for _, s := range spans {
		b.union(s)
	}
	return b.span()
}

// growthSpan returns the span to publish an object under in the growth
// step, when its new span is span and it is published under old: span
// itself when that holds every node of old, else both together (shrinks:
// the object leaves nodes, in the shrinking step).
func growthSpan(nodes *nodeTable, span, old *Span) (pub *Span, shrinks bool) {
	if covers(span, old) {
		return span, false
	}
	return unionOf(nodes, span, old), true
}

func (b *spanBuilder) span() *Span {
	return &Span{nodes: b.nodes, bits: slices.Clip(trimZeros(b.bits))}
}
