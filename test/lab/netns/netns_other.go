//go:build !linux

package netns

import "fmt"

// Create is not supported off Linux.
func Create(path string) error { return fmt.Errorf("create netns %s: %w", path, ErrNotSupported) }

// Remove is not supported off Linux.
func Remove(path string) error { return fmt.Errorf("remove netns %s: %w", path, ErrNotSupported) }

// Exists is always false off Linux.
func Exists(string) bool { return false }

// Do runs fn directly when path is ""; entering another namespace is not supported off Linux.
func Do(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	return fmt.Errorf("in netns %s: %w", path, ErrNotSupported)
}

// PrivateMountNS is always false off Linux.
func PrivateMountNS() bool { return false }
