// Command seine-cni is Seine's CNI plugin. Container runtimes exec it (as
// "seine" in their CNI bin directory); it forwards each command to the local
// seine-agent. All logic is in package cni/plugin.
package main

import "github.com/seine-cni/seine/cni/plugin"

func main() {
	plugin.Main("CNI plugin seine-cni: forwards CNI commands to seine-agent")
}
