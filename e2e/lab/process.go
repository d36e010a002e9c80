package lab

import (
	"fmt"
	"syscall"
	"time"
)

// Process is a long-lived process a test runs on a node, as a node's
// daemon would run (the model-based test's agent).
type Process struct{ p *proc }

// StartOnNode starts argv inside the named node's network and mount
// namespaces and the lab's cgroup; its output goes to the lab's log
// folder under name. The lab stops it when it closes, if the test has
// not.
func (l *Lab) StartOnNode(node, name string, argv ...string) (*Process, error) {
	for _, n := range l.nodes {
		if n.Name == node {
			p, err := l.startIn(n.host, name, argv)
			if err != nil {
				return nil, err
			}
			return &Process{p: p}, nil
		}
	}
	return nil, fmt.Errorf("no node %q in the lab", node)
}

// Kill ends the process with SIGKILL, as the kernel's OOM killer or a
// crash does, and waits for it.
func (p *Process) Kill() {
	if !p.p.exited() {
		_ = p.p.cmd.Process.Signal(syscall.SIGKILL) // it may have just ended
	}
	<-p.p.done
}

// Stop asks the process to end (SIGTERM) and kills it after grace.
func (p *Process) Stop(grace time.Duration) { p.p.stop(grace) }

// Exited says whether the process has ended.
func (p *Process) Exited() bool { return p.p.exited() }

// Tail is the last n lines of the process's output.
func (p *Process) Tail(n int) string { return p.p.tail(n) }
