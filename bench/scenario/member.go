package scenario

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wspubsub/wspubsub/bench/procfs"
	"github.com/wspubsub/wspubsub/bench/refhub"
	"github.com/wspubsub/wspubsub/bench/result"
	"github.com/wspubsub/wspubsub/bench/target"
)

// Command is one step the coordinator asks of a client process. Worker
// processes read them as JSON lines on stdin and answer each with one Reply
// line on stdout, between which they write Progress lines.
type Command struct {
	Op        string         `json:"op"` // setup, subscribe, mark, churn, cuts, finish
	Setup     *Setup         `json:"setup,omitempty"`
	Subscribe *SubscribePlan `json:"subscribe,omitempty"`
	Mark      *MarkPlan      `json:"mark,omitempty"`
	Churn     *ChurnPlan     `json:"churn,omitempty"`
	Cuts      *CutPlan       `json:"cuts,omitempty"`
}

// MarkPlan starts the measured phase (see Group.Mark).
type MarkPlan struct {
	Start int64 `json:"start_ns"`
	Width int64 `json:"width_ns"`
}

// Reply answers a Command.
type Reply struct {
	Err       string          `json:"err,omitempty"`
	Subscribe *SubscribeReply `json:"subscribe,omitempty"`
	Part      *result.Part    `json:"part,omitempty"`
}

// line is what a worker process writes: a progress snapshot or a reply.
type line struct {
	Progress *Progress `json:"progress,omitempty"`
	Reply    *Reply    `json:"reply,omitempty"`
}

// handle runs one command on a group. remote says the group is a worker
// process of its own, which reports its own CPU time.
func (g *Group) handle(ctx context.Context, cmd Command, remote bool) Reply {
	var r Reply
	var err error
	switch cmd.Op {
	case "subscribe":
		var rep SubscribeReply
		rep, err = g.Subscribe(ctx, *cmd.Subscribe)
		r.Subscribe = &rep
	case "mark":
		err = g.Mark(ctx, cmd.Mark.Start, cmd.Mark.Width)
	case "churn":
		err = g.StartChurn(ctx, *cmd.Churn)
	case "cuts":
		err = g.StartCuts(ctx, *cmd.Cuts)
	case "finish":
		var p result.Part
		p, err = g.Finish(ctx, remote)
		r.Part = &p
	default:
		err = fmt.Errorf("unknown command %q", cmd.Op)
	}
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

// member is a process's share of the subscribers, in this process or in a
// worker process.
type member interface {
	call(ctx context.Context, cmd Command) (Reply, error)
	progress() Progress
	close() error
}

type localMember struct{ g *Group }

func (m localMember) call(ctx context.Context, cmd Command) (Reply, error) {
	r := m.g.handle(ctx, cmd, false)
	if r.Err != "" {
		return r, errors.New(r.Err)
	}
	return r, nil
}

func (m localMember) progress() Progress { return m.g.Progress() }
func (m localMember) close() error       { return nil }

// remoteMember is a worker process: this binary re-executed with
// RoleEnv=worker.
type remoteMember struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	enc     *json.Encoder
	replies chan Reply
	exited  chan struct{}
	mu      sync.Mutex
	last    Progress
	readErr error
}

func spawnWorker(self string, setup Setup) (*remoteMember, error) {
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), target.RoleEnv+"=worker")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("cannot start a worker process: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("cannot start a worker process: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start a worker process: %w", err)
	}
	m := &remoteMember{
		cmd: cmd, stdin: stdin, enc: json.NewEncoder(stdin),
		replies: make(chan Reply, 4),
		exited:  make(chan struct{}),
	}
	go m.read(stdout)
	if _, err := m.call(context.Background(), Command{Op: "setup", Setup: &setup}); err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

func (m *remoteMember) read(r io.Reader) {
	defer close(m.exited)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 512<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			m.mu.Lock()
			m.readErr = fmt.Errorf("cannot parse a worker's output: %w", err)
			m.mu.Unlock()
			continue
		}
		if l.Progress != nil {
			m.mu.Lock()
			m.last = *l.Progress
			m.mu.Unlock()
		}
		if l.Reply != nil {
			select {
			case m.replies <- *l.Reply:
			default: // nobody waits any more (the call timed out): drop it
			}
		}
	}
	m.cmd.Wait()
}

func (m *remoteMember) call(ctx context.Context, cmd Command) (Reply, error) {
	if err := m.enc.Encode(cmd); err != nil {
		return Reply{}, fmt.Errorf("cannot send %s to worker %d: %w", cmd.Op, m.cmd.Process.Pid, err)
	}
	select {
	case r := <-m.replies:
		if r.Err != "" {
			return r, fmt.Errorf("worker %d: %s", m.cmd.Process.Pid, r.Err)
		}
		return r, nil
	case <-m.exited:
		m.mu.Lock()
		err := m.readErr
		m.mu.Unlock()
		return Reply{}, fmt.Errorf("worker %d exited during %s (%v)", m.cmd.Process.Pid, cmd.Op, err)
	case <-ctx.Done():
		return Reply{}, fmt.Errorf("cannot finish %s on worker %d: %w", cmd.Op, m.cmd.Process.Pid, ctx.Err())
	}
}

func (m *remoteMember) progress() Progress {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

func (m *remoteMember) close() error {
	m.stdin.Close()
	select {
	case <-m.exited:
		return nil
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
		return fmt.Errorf("worker %d did not exit within 10 s; killed", m.cmd.Process.Pid)
	}
}

// ServeWorker is the main loop of a worker process: commands on in,
// progress and replies on out, until in closes.
func ServeWorker(in io.Reader, out io.Writer) error {
	if _, err := procfs.RaiseNoFile(); err != nil {
		return err
	}
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	write := func(l line) error {
		mu.Lock()
		defer mu.Unlock()
		return enc.Encode(l)
	}
	var group atomic.Pointer[Group]
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if g := group.Load(); g != nil {
					p := g.Progress()
					write(line{Progress: &p})
				}
			}
		}
	}()
	defer func() {
		if g := group.Load(); g != nil {
			g.Close()
		}
	}()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var cmd Command
		var r Reply
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			r.Err = fmt.Sprintf("cannot parse command: %v", err)
		} else if cmd.Op == "setup" {
			if group.Load() != nil {
				r.Err = "setup sent twice"
			} else if g, err := NewGroup(*cmd.Setup); err != nil {
				r.Err = err.Error()
			} else {
				group.Store(g)
			}
		} else if g := group.Load(); g == nil {
			r.Err = "command before setup"
		} else {
			r = g.handle(context.Background(), cmd, true)
		}
		if err := write(line{Reply: &r}); err != nil {
			return fmt.Errorf("cannot answer the coordinator: %w", err)
		}
	}
	return sc.Err()
}

// RunHelper makes this process a worker or a reference hub when RoleEnv
// asks for one, and reports whether it did. Both the bench's main and test
// binaries call it first thing.
func RunHelper() (bool, error) {
	switch os.Getenv(target.RoleEnv) {
	case "worker":
		return true, ServeWorker(os.Stdin, os.Stdout)
	case "refhub":
		args := os.Args[1:]
		if len(args) > 0 && args[0] == "refhub" {
			args = args[1:]
		}
		return true, refhub.Main(args)
	case "neighbor-sink":
		return true, NeighborSink(os.Args[1:])
	}
	return false, nil
}
