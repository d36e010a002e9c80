package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestGet(t *testing.T) {
	tests := []struct {
		name     string
		handler  http.HandlerFunc
		timeout  time.Duration
		wantBody string
		wantErr  string
	}{
		{
			name: "a 200 answer's body is printed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "198.51.100.101\n")
			},
			wantBody: "198.51.100.101\n",
		},
		{
			name: "any 2xx answer counts as success",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
			},
			wantBody: "",
		},
		{
			name: "a non-2xx answer fails with its status and body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "denied by policy", http.StatusForbidden)
			},
			wantErr: `403 Forbidden: "denied by policy"`,
		},
		{
			name: "a server slower than the timeout fails with a timeout",
			handler: func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			},
			timeout: 100 * time.Millisecond,
			wantErr: "Client.Timeout exceeded",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			var out bytes.Buffer
			err := get(context.Background(), getConfig{url: srv.URL + "/", timeout: timeout}, &out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("get error = %v, want one containing %q", err, tt.wantErr)
				}
				if out.Len() != 0 {
					t.Errorf("printed %q on failure, want nothing", out.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if out.String() != tt.wantBody {
				t.Errorf("body = %q, want %q", out.String(), tt.wantBody)
			}
		})
	}
}
