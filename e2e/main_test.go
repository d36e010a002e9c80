package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsegress/nsegress/e2e/lab"
	"github.com/nsegress/nsegress/e2e/privtest"
)

// suite is the one lab cluster the package's tests share; it starts with
// the first test that asks for it and closes after the last.
var suite struct {
	once sync.Once
	lab  *lab.Lab
	c    Cluster
	err  error
	// unavailable is set when the machine lacks what the lab needs
	// (binaries not built): a skip outside CI, a failure in it.
	unavailable bool
}

func TestMain(m *testing.M) {
	// Before the suite's lab: a folder that a lab (this suite's, or one
	// of another test binary running beside it) creates on the machine
	// fails the run.
	machine := lab.SnapshotMachine()
	code := m.Run()
	if suite.lab != nil {
		if err := suite.lab.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "close the lab: %v\n", err)
			code = 1
		}
	}
	if leaked := machine.Appeared(); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: a lab left on the machine what did not exist when the suite started: %s\n",
			strings.Join(leaked, ", "))
		code = 1
	}
	os.Exit(code)
}

// cluster returns the shared lab cluster, starting it on first use.
func cluster(t testing.TB) Cluster {
	t.Helper()
	privtest.Require(t)
	if testing.Short() {
		t.Skip("lab tests do not run with -short")
	}
	suite.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cfg := lab.DefaultConfig()
		// NSEGRESS_LAB_PRIMARY runs the suite on a cluster whose nodes
		// all run that primary (make test runs the seed suite on flannel).
		cfg.Primary = os.Getenv("NSEGRESS_LAB_PRIMARY")
		cfg.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
		if err := lab.Prepare(ctx, &cfg); err != nil {
			suite.err = err
			suite.unavailable = errors.Is(err, lab.ErrBinariesMissing)
			return
		}
		suite.lab, suite.err = lab.Start(ctx, cfg)
		if suite.err == nil {
			suite.c = labCluster{lab: suite.lab, kubectl: cfg.Bins.Kubectl}
		}
	})
	if suite.unavailable {
		privtest.Unavailable(t, suite.err.Error())
	}
	if suite.err != nil {
		t.Fatalf("start the lab cluster: %v", suite.err)
	}
	return suite.c
}

// kubectl runs kubectl against c and returns its combined output.
func kubectl(ctx context.Context, c Cluster, stdin string, args ...string) (string, error) {
	return runTool(ctx, c, stdin, c.Kubectl(), args...)
}

func runTool(ctx context.Context, c Cluster, stdin, bin string, args ...string) (string, error) {
	cmd := command(ctx, bin, args...)
	cmd.Env = c.Env()
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
