//go:build !windows

package winpipe

import (
	"context"
	"errors"
	"testing"
)

func TestDialUnsupported(t *testing.T) {
	if _, err := Dial(context.Background(), `\\.\pipe\x`); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Dial off Windows: %v, want errors.ErrUnsupported", err)
	}
}
