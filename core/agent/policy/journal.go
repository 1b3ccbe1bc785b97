package policy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
)

// The state file is rewritten whole (temp file, fsync, rename) only now
// and then; a Sync's change is appended to a journal beside it
// (<file>.journal): one JSON line per object that came, changed or went,
// then a line that commits the batch, and one fsync. At 10,000 policies
// the whole file is ~2 MB and took 4-14 ms to write and fsync on every
// Sync; a one-policy change appends well under a kilobyte. Reading applies
// the committed batches numbered after the file's seq, in order, and stops
// at a line that does not parse (a write the crash tore: its batch never
// committed). The file is rewritten when the journal would pass half its
// size, and by the first write of a process (numbered after anything on
// disk), which also drops a torn tail. A journal left beside a newer file
// (a crash between the rename and the journal's removal) holds only
// batches numbered up to the file's seq: they are skipped.

// journalRecord is one line of the journal: an object of Kind ("np",
// "atg", "ag") named Name set to Object or Deleted, or, with Kind empty,
// the commit of batch Seq.
type journalRecord struct {
	Seq     uint64          `json:"seq"`
	Kind    string          `json:"kind,omitempty"`
	Name    string          `json:"name,omitempty"`
	Deleted bool            `json:"deleted,omitempty"`
	Object  json.RawMessage `json:"object,omitempty"`
}

func journalPath(path string) string { return path + ".journal" }

// journal is the encoder's view of what is on disk.
type journal struct {
	seq     uint64            // of the last batch or file written
	opened  bool              // seq continues what is on disk
	bytes   int               // in the journal
	written [3]map[string]any // kind -> name -> the object on disk
}

var journalKinds = [3]string{"np", "atg", "ag"}

// stateMaps are s's three maps as maps of any, in journalKinds' order.
func stateMaps(s *State) [3]func(func(string, any)) {
	return [3]func(func(string, any)){
		func(f func(string, any)) {
			for k, v := range s.NetworkPolicies {
				f(k, v)
			}
		},
		func(f func(string, any)) {
			for k, v := range s.AppliedToGroups {
				f(k, v)
			}
		},
		func(f func(string, any)) {
			for k, v := range s.AddressGroups {
				f(k, v)
			}
		},
	}
}

// based records that the file at path now holds s, and removes the journal
// (what it holds is older than the file).
func (j *journal) based(path string, s *State) {
	for i, each := range stateMaps(s) {
		j.written[i] = map[string]any{}
		each(func(name string, obj any) { j.written[i][name] = obj })
	}
	j.bytes = 0
	if err := os.Remove(journalPath(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		j.bytes = 1 << 62 // rewrite the file next time rather than append to it
	}
}

// write makes the state at path s: a batch appended to the journal, or the
// file rewritten (see the top of this file).
func (e *stateEncoder) write(path string, s *State) error {
	if !e.j.opened {
		if seq, err := diskSeq(path); err == nil {
			e.j.seq = max(e.j.seq, seq)
		}
		e.j.opened = true
		return e.writeBase(path, s)
	}
	seq := e.j.seq + 1
	type change struct {
		kind    int
		name    string
		obj     any
		deleted bool
	}
	var changes []change
	for i, each := range stateMaps(s) {
		had := e.j.written[i]
		kept := 0
		each(func(name string, obj any) {
			if old, ok := had[name]; ok {
				kept++
				if old == obj {
					return
				}
			}
			changes = append(changes, change{i, name, obj, false})
		})
		if kept < len(had) {
			present := map[string]bool{}
			each(func(name string, _ any) { present[name] = true })
			for name := range had {
				if !present[name] {
					changes = append(changes, change{i, name, nil, true})
				}
			}
		}
	}
	if len(changes) == 0 {
		return nil // the disk holds s
	}
	var batch bytes.Buffer
	for _, c := range changes {
		r := journalRecord{Seq: seq, Kind: journalKinds[c.kind], Name: c.name, Deleted: c.deleted}
		if !c.deleted {
			enc, err := e.encoded(c.name, c.obj)
			if err != nil {
				return fmt.Errorf("encode policy state: %w", err)
			}
			r.Object = enc.v
		}
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode policy state: %w", err)
		}
		batch.Write(b)
		batch.WriteByte('\n')
	}
	fmt.Fprintf(&batch, `{"seq":%d}`+"\n", seq)
	if e.j.bytes+batch.Len() > e.size/2 {
		return e.writeBase(path, s)
	}
	f, err := os.OpenFile(journalPath(path), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("policy state journal: %w", err)
	}
	_, werr := f.Write(batch.Bytes())
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		// Part of the batch may be on disk, uncommitted: rewrite the file
		// (which drops the journal) next time.
		e.j.bytes = 1 << 62
		return fmt.Errorf("append policy state journal: %w", err)
	}
	e.j.seq, e.j.bytes = seq, e.j.bytes+batch.Len()
	for _, c := range changes {
		if c.deleted {
			delete(e.j.written[c.kind], c.name)
		} else {
			e.j.written[c.kind][c.name] = c.obj
		}
	}
	return nil
}

// diskSeq is the highest sequence number of the file at path and its
// journal.
func diskSeq(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var f struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return 0, err
	}
	seq := f.Seq
	err = scanJournal(journalPath(path), func(r journalRecord) { seq = max(seq, r.Seq) })
	return seq, err
}

// scanJournal calls f with each record of the journal at path up to the
// first line that does not parse; a missing journal has none.
func scanJournal(path string, f func(journalRecord)) error {
	jf, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read policy state journal: %w", err)
	}
	defer jf.Close()
	sc := bufio.NewScanner(jf)
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	for sc.Scan() {
		var r journalRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil // torn: never committed
		}
		f(r)
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return fmt.Errorf("read policy state journal: %w", err)
	}
	return nil
}

// replayJournal applies to f the journal's committed batches numbered
// after f.Seq.
func replayJournal(path string, f *stateFile) error {
	var pending []journalRecord
	var bad error
	err := scanJournal(path, func(r journalRecord) {
		if r.Kind != "" {
			pending = append(pending, r)
			return
		}
		batch := pending
		pending = nil
		if r.Seq <= f.Seq || bad != nil {
			return
		}
		for _, c := range batch {
			if c.Seq != r.Seq {
				continue // a batch that never committed
			}
			if err := applyRecord(&f.State, c); err != nil {
				bad = err
				return
			}
		}
		f.Seq = r.Seq
	})
	return errors.Join(err, bad)
}

func applyRecord(s *State, r journalRecord) error {
	switch r.Kind {
	case "np":
		return applyTo(&s.NetworkPolicies, r)
	case "atg":
		return applyTo(&s.AppliedToGroups, r)
	case "ag":
		return applyTo(&s.AddressGroups, r)
	}
	return fmt.Errorf("policy state journal: batch %s: kind %q", strconv.FormatUint(r.Seq, 10), r.Kind)
}

func applyTo[T any](m *map[string]*T, r journalRecord) error {
	if r.Deleted {
		delete(*m, r.Name)
		return nil
	}
	var obj *T
	if err := json.Unmarshal(r.Object, &obj); err != nil {
		return fmt.Errorf("policy state journal: %s %s: %w", r.Kind, r.Name, err)
	}
	if *m == nil {
		*m = map[string]*T{}
	}
	(*m)[r.Name] = obj
	return nil
}
