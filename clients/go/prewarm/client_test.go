package prewarm

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadEventsParsesProgressAndFinished(t *testing.T) {
	body := ": keep-alive\n\nevent: progress\nid: 5\ndata: {\"totalNodes\":3,\"completedNodes\":1,\"status\":\"running\",\"percentage\":33.3}\n\n" +
		"event: finished\nid: 15\ndata: {\"taskId\":\"t\",\"status\":\"completed\",\"progress\":{\"totalNodes\":3,\"completedNodes\":3}}\n\n"
	var got []Event
	if err := ReadEvents(strings.NewReader(body), func(ev Event) error { got = append(got, ev); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Type != "progress" || got[1].Type != "finished" {
		t.Fatalf("events: %+v", got)
	}
	if got[0].ID != "5" || got[0].Progress.TotalNodes != 3 || got[0].Progress.Status != "running" {
		t.Fatalf("progress: %+v", got[0].Progress)
	}
	if got[1].Task.TaskID != "t" || got[1].Task.Progress.CompletedNodes != 3 {
		t.Fatalf("task: %+v", got[1].Task)
	}
}

func TestAPIErrorsMatchSentinelsAndCarryTheBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer secret" {
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"error":"Unauthorized","details":"missing token"}`))
			return
		}
		w.WriteHeader(409)
		_, _ = w.Write([]byte(`{"error":"Task already completed","status":"completed","taskId":"x"}`))
	}))
	defer srv.Close()
	_, err := NewClient(srv.URL, "").CancelTask(context.Background(), "x")
	if !errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrConflict) {
		t.Fatalf("want unauthorized, got %v", err)
	}
	_, err = NewClient(srv.URL, "secret").CancelTask(context.Background(), "x")
	var apiErr *APIError
	if !errors.Is(err, ErrConflict) || !errors.As(err, &apiErr) || apiErr.Body.Status != "completed" {
		t.Fatalf("want conflict with body, got %v", err)
	}
	if err.Error() != "Task already completed (HTTP 409)" {
		t.Fatalf("message: %q", err.Error())
	}
}

func TestContextCancelsWaiting(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"taskId":"t","status":"running"}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewClient(srv.URL, "").WaitForCompletion(ctx, "t", 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
}

func TestNewClientWithCATrustsOnlyTheGivenBundle(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"taskId":"t-1","status":"completed"}`))
	}))
	defer srv.Close()
	bundle := filepath.Join(t.TempDir(), "ca.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(bundle, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := NewClientWithCA(srv.URL, "", bundle)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.GetTask(context.Background(), "t-1")
	if err != nil || task.TaskID != "t-1" {
		t.Fatalf("over HTTPS with the CA: %+v, %v", task, err)
	}
	if _, err := NewClient(srv.URL, "").GetTask(context.Background(), "t-1"); err == nil {
		t.Fatal("a server signed by an unknown authority was trusted")
	}
	if _, err := NewClientWithCA(srv.URL, "", filepath.Join(t.TempDir(), "none.pem")); err == nil {
		t.Fatal("a missing bundle was accepted")
	}
}

func TestClientsDropIdleConnectionsBeforeTheServerDoes(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	bundle := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	withCA, err := NewClientWithCA(srv.URL, "", bundle)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Client{NewClient("http://127.0.0.1:1", ""), withCA} {
		transport, ok := c.httpClient().Transport.(*http.Transport)
		if !ok {
			t.Fatalf("transport %T", c.httpClient().Transport)
		}
		if transport.IdleConnTimeout != PoolIdleTimeout {
			t.Fatalf("idle connections pooled for %v, want %v", transport.IdleConnTimeout, PoolIdleTimeout)
		}
	}
	// Below the server's header-read timeout (10 s by default).
	if PoolIdleTimeout >= 10*time.Second {
		t.Fatalf("PoolIdleTimeout %v", PoolIdleTimeout)
	}
}

func TestUpdatesCanClearFromWorkload(t *testing.T) {
	var bodies []map[string]interface{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]interface{}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("body: %v", err)
		}
		bodies = append(bodies, body)
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	c := NewClient(srv.URL, "")
	ctx := context.Background()
	if _, err := c.UpdateKeepWarmPolicy(ctx, "p", KeepWarmPolicyRequest{Images: []string{"nginx"}, ClearFromWorkload: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateKeepWarmPolicy(ctx, "p", KeepWarmPolicyRequest{Images: []string{"nginx"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateScheduledTask(ctx, "s", ScheduledTaskRequest{ClearFromWorkload: true}); err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 3 {
		t.Fatalf("requests: %d", len(bodies))
	}
	if v, ok := bodies[0]["fromWorkload"]; !ok || v != nil {
		t.Fatalf("policy update: %v", bodies[0])
	}
	if _, ok := bodies[1]["fromWorkload"]; ok {
		t.Fatalf("a plain update sent fromWorkload: %v", bodies[1])
	}
	config, _ := bodies[2]["taskConfig"].(map[string]interface{})
	if v, ok := config["fromWorkload"]; !ok || v != nil {
		t.Fatalf("schedule update: %v", bodies[2])
	}
}
