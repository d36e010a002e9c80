package e2e

import (
	"bufio"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsegress/nsegress/e2e/privtest"
)

// BenchmarkGatewayFailover kills the gateway holding a selected pod's
// egress IP b.N times (every process of the node frozen and its cable
// pulled; make bench runs 20), each while the pod holds four long-lived
// connections (two it drives, two the backend drives) and opens a new
// connection every 10 ms with a 100 ms timeout. It reports the
// distributions of kill → declared dead (the standby's log line), kill →
// the standby holds the IP, and kill → the first new connection that
// succeeds, and the fraction of long-lived connections that survived with
// their longest pause. After each kill the dead node comes back (its agent
// thawed first, as a rebooted node comes up without its addresses, then its
// cable) and becomes the standby of the next kill.
func BenchmarkGatewayFailover(b *testing.B) {
	c := cluster(b)
	ctx := context.Background()
	client, _ := selectedClient(b, c, "bfo")
	egress := "198.51.100.101"
	url := c.Backends()[0].URL()
	var dead, held, firstNew, gaps []time.Duration
	var flows, survived int
	for i := range b.N {
		holder, standby := activeAndStandby(b, c, egress)
		if standby == "" {
			b.Fatalf("kill %d: %s has no standby", i, egress)
		}
		time.Sleep(3 * time.Second) // replication caught up, heartbeats steady
		var wg sync.WaitGroup
		outs := make([]string, 5)
		errs := make([]error, 5)
		argv := [][]string{
			{"stream", "-interval", "100ms", "-duration", "8s", "-timeout", "10s", url},
			{"stream", "-interval", "100ms", "-duration", "8s", "-timeout", "10s", url},
			{"pull", "-interval", "50ms", "-duration", "8s", url},
			{"pull", "-interval", "50ms", "-duration", "8s", url},
			{"stream", "-fresh", "-trace", "-interval", "10ms", "-duration", "8s", "-timeout", "100ms", url},
		}
		for j, a := range argv {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[j], errs[j] = execIn(ctx, c, client.Namespace, client.Name, append([]string{"/labbox"}, a...)...)
			}()
		}
		time.Sleep(2 * time.Second)
		killed := time.Now()
		if err := c.SetUnderlay(holder, false); err != nil {
			b.Fatal(err)
		}
		if err := c.FreezeNode(holder, true); err != nil {
			b.Fatal(err)
		}
		for {
			if h := holdersOf(b, c, egress); slices.Contains(h, standby) {
				held = append(held, time.Since(killed))
				break
			}
			if time.Since(killed) > 10*time.Second {
				b.Fatalf("kill %d: %s did not take %s over", i, standby, egress)
			}
			time.Sleep(5 * time.Millisecond)
		}
		wg.Wait()
		for j, err := range errs {
			if err != nil {
				b.Fatalf("kill %d: labbox %v: %v", i, argv[j], err)
			}
		}
		for j := range 4 {
			flows++
			ok, gap := longLived(b, outs[j])
			if ok {
				survived++
			}
			gaps = append(gaps, gap)
		}
		firstNew = append(firstNew, firstSuccessAfter(b, outs[4], killed))
		if d, ok := declaredDead(c, standby, egress, killed); ok {
			dead = append(dead, d)
		}
		// Back: the agent first (it finds itself cut off and lets its IPs
		// go), then the cable; then wait until it is the standby.
		if err := c.FreezeNode(holder, false); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Second)
		if err := c.SetUnderlay(holder, true); err != nil {
			b.Fatal(err)
		}
		privtest.Eventually(b, 60*time.Second, holder+" the standby again", func() (bool, error) {
			h, s := activeAndStandby(b, c, egress)
			return h == standby && s == holder && len(holdersOf(b, c, egress)) == 1, nil
		})
		b.Logf("kill %d of %s at %s: held by %s after %s, first new connection after %s", i, holder, killed.Format("15:04:05.000000"), standby, held[len(held)-1].Round(time.Millisecond), firstNew[len(firstNew)-1].Round(time.Millisecond))
		if testing.Verbose() {
			for _, n := range []string{standby, client.Spec.NodeName} {
				b.Logf("agent on %s:\n%s", n, agentLogOn(c, n, killed))
			}
		}
	}
	report := func(name string, ds []time.Duration) {
		if len(ds) == 0 {
			return
		}
		slices.Sort(ds)
		b.ReportMetric(ms(ds[len(ds)/2]), "ms-"+name+"-median")
		b.ReportMetric(ms(ds[min(len(ds)-1, len(ds)*99/100)]), "ms-"+name+"-p99")
		b.ReportMetric(ms(ds[len(ds)-1]), "ms-"+name+"-max")
	}
	report("declared-dead", dead)
	report("ip-held", held)
	report("first-new-connection", firstNew)
	report("flow-pause", gaps)
	b.ReportMetric(float64(survived)/float64(flows), "fraction-flows-survived")
}

// activeAndStandby are the active node and the standby of ip in group
// onprem.
func activeAndStandby(t testing.TB, c Cluster, ip string) (active, standby string) {
	t.Helper()
	f := assignment(t, c, ip, "active", "standby")
	return f[0], f[1]
}

// longLived reads the summary of labbox stream or pull: whether the
// connection survived every request or line, and its longest pause.
func longLived(t testing.TB, out string) (bool, time.Duration) {
	t.Helper()
	out = strings.TrimSpace(out)
	if strings.HasPrefix(out, "lines") {
		var lines, want, gap int
		var e string
		if _, err := fmt.Sscanf(out, "lines %d of %d longest-gap-ms %d error %s", &lines, &want, &gap, &e); err != nil {
			t.Fatalf("parse %q: %v", out, err)
		}
		return lines == want && e == "none", time.Duration(gap) * time.Millisecond
	}
	var requests, failed, conns, gap int
	if _, err := fmt.Sscanf(out, "requests %d failed %d connections %d longest-gap-ms %d", &requests, &failed, &conns, &gap); err != nil {
		t.Fatalf("parse %q: %v", out, err)
	}
	return conns == 1 && failed == 0, time.Duration(gap) * time.Millisecond
}

// firstSuccessAfter is, from labbox stream -trace output, how long after
// at the first request started after it succeeded.
func firstSuccessAfter(t testing.TB, out string, at time.Time) time.Duration {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var start, end int64
		var result string
		if n, _ := fmt.Sscanf(sc.Text(), "req %d %d %s", &start, &end, &result); n != 3 {
			continue
		}
		if start >= at.UnixNano() && result == "ok" {
			return time.Unix(0, end).Sub(at)
		}
	}
	t.Fatalf("no new connection succeeded after the kill:\n%s", out)
	return 0
}

// takeoverLine is the standby agent's log line of a takeover.
var takeoverLine = regexp.MustCompile(`^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6}) ha: taking over (\S+) from`)

// declaredDead is how long after at the standby's agent logged taking ip
// over (the agent logs in local time with microseconds).
func declaredDead(c Cluster, standby, ip string, at time.Time) (time.Duration, bool) {
	// Only the standby's agent: the dead node's kubelet answers nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pod, err := kubectl(ctx, c, "", "-n", "nsegress-system", "get", "pods", "-o", "name",
		"-l", "app.kubernetes.io/name=nsegress-agent", "--field-selector", "spec.nodeName="+standby)
	if err != nil || strings.TrimSpace(pod) == "" {
		return 0, false
	}
	out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "logs", "--tail=300", strings.TrimSpace(pod))
	if err != nil {
		return 0, false
	}
	var best time.Duration
	found := false
	for _, line := range strings.Split(out, "\n") {
		m := takeoverLine.FindStringSubmatch(line)
		if m == nil || m[2] != ip {
			continue
		}
		ts, err := time.ParseInLocation("2006/01/02 15:04:05.000000", m[1], time.Local)
		if err != nil || ts.Before(at) {
			continue
		}
		if d := ts.Sub(at); !found || d < best {
			best, found = d, true
		}
	}
	return best, found
}

// agentLogOn is the log of the agent on node since at.
func agentLogOn(c Cluster, node string, at time.Time) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pod, err := kubectl(ctx, c, "", "-n", "nsegress-system", "get", "pods", "-o", "name",
		"-l", "app.kubernetes.io/name=nsegress-agent", "--field-selector", "spec.nodeName="+node)
	if err != nil {
		return err.Error()
	}
	out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "logs", "--since-time="+at.Add(-time.Second).Format(time.RFC3339), strings.TrimSpace(pod))
	if err != nil {
		return err.Error()
	}
	return out
}
