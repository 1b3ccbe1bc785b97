// Package pipetest serves named pipes for tests of Windows transports.
//
// go-winio's ListenPipe never completes Accept under Wine 8 (its client side
// works), so Windows tests that must also run under Wine (test/windows) use
// this small server instead: one overlapped pipe instance waiting at a time,
// each accepted instance handed out as an *os.File, which Go (1.25+) drives
// through its own I/O completion port, deadlines included. The package is
// empty off Windows.
package pipetest
