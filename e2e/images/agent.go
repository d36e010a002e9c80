package images

import (
	"context"
	"os"
	"path/filepath"
)

// AgentImageRef is the tag the lab's install overlay
// (e2e/testdata/lab-install) deploys.
const AgentImageRef = LocalPrefix + "nsegress/nsegress-agent:lab"

// AgentImage builds the agent and the plugin from this checkout as static
// binaries and packs both into the agent image (the plugin beside the
// agent, where the agent installs it from). It returns the tarball's
// path in cacheDir, reused while the binaries are unchanged.
func AgentImage(ctx context.Context, cacheDir string) (string, error) {
	dir, err := os.MkdirTemp("", "nsegress-agent-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	agent, plugin := filepath.Join(dir, "nsegress-agent"), filepath.Join(dir, "nsegress")
	for bin, pkg := range map[string]string{
		agent:  "github.com/nsegress/nsegress/cmd/nsegress-agent",
		plugin: "github.com/nsegress/nsegress/cmd/nsegress",
	} {
		if err := BuildStatic(ctx, "", pkg, bin); err != nil {
			return "", err
		}
	}
	tb, err := PackBinaryCached(cacheDir, agent, Spec{
		Ref: AgentImageRef, Path: "/nsegress-agent", Entrypoint: []string{"/nsegress-agent"}, Cmd: []string{"run"},
		Extra: map[string]string{"/nsegress": plugin},
	})
	if err != nil {
		return "", err
	}
	return tb.Path, nil
}
