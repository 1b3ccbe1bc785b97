package main

import (
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/windows"
)

// newBackend picks the Windows backend.
func newBackend(cfg platform.Config) (platform.Backend, error) { return windows.New(cfg) }
