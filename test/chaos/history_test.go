package chaos

import (
	"bytes"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
)

func TestHistoryJSONLines(t *testing.T) {
	var sink bytes.Buffer
	h := NewHistory(&sink)
	want := concurrentOK("k")
	want[2].Err = "some error"
	want[2].Version = "42"
	var wg sync.WaitGroup
	for _, op := range want {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.Add(op)
		}()
	}
	wg.Wait()
	if h.Err() != nil || h.Len() != len(want) {
		t.Fatalf("err %v, len %d", h.Err(), h.Len())
	}
	SortOps(want)
	if got := h.Ops(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Ops:\n%v\nwant\n%v", got, want)
	}

	// What the sink streamed and what SaveOps writes both load back.
	streamed, err := ReadOps(&sink)
	if err != nil {
		t.Fatal(err)
	}
	SortOps(streamed)
	path := filepath.Join(t.TempDir(), "history.jsonl")
	if err := SaveOps(path, h.Ops()); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadOps(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range [][]Op{streamed, loaded} {
		if len(got) != len(want) {
			t.Fatalf("%d ops, want %d", len(got), len(want))
		}
		for i := range got {
			if !got[i].Invoke.Equal(want[i].Invoke) || !got[i].Complete.Equal(want[i].Complete) {
				t.Fatalf("op %d times %v %v", i, got[i].Invoke, got[i].Complete)
			}
			got[i].Invoke, got[i].Complete = want[i].Invoke, want[i].Complete
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Fatalf("op %d: %+v, want %+v", i, got[i], want[i])
			}
		}
	}
	if _, err := ReadOps(bytes.NewBufferString("{\"client\":1}\n{bad")); err == nil {
		t.Fatal("no error for a truncated line")
	}
}
