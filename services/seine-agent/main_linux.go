package main

import (
	"github.com/seine-cni/seine/linux"
	"github.com/seine-cni/seine/platform"
)

// newBackend picks the Linux backend.
func newBackend(cfg platform.Config) (platform.Backend, error) { return linux.New(cfg) }
