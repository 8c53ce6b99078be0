package prewarm

// The SDK against a running service with simulated nodes: PREWARM_SERVER is
// the service, PREWARM_TEST_SELECTOR (key=value) this suite's nodes, all of
// which fail registry.example.com/missing/* and pull slow/* slowly. The Rust
// test sdk_suites_pass_against_the_live_service sets them up.

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func liveClient(t *testing.T) *Client {
	t.Helper()
	server := os.Getenv("PREWARM_SERVER")
	if server == "" {
		t.Skip("PREWARM_SERVER not set")
	}
	if ca := os.Getenv("PREWARM_CA_CERT"); ca != "" {
		c, err := NewClientWithCA(server, os.Getenv("PREWARM_TOKEN"), ca)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return NewClient(server, os.Getenv("PREWARM_TOKEN"))
}

func selector() map[string]string {
	sel := os.Getenv("PREWARM_TEST_SELECTOR")
	if sel == "" {
		sel = "suite=sdk"
	}
	kv := strings.SplitN(sel, "=", 2)
	return map[string]string{kv[0]: kv[1]}
}

func TestLiveCreateWatchComplete(t *testing.T) {
	c := liveClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	task, err := c.CreateTask(ctx, CreateTaskRequest{Images: []string{"go-sdk/app:1"}, BatchSize: 2, NodeSelector: selector()})
	if err != nil {
		t.Fatal(err)
	}
	if task.Status != StatusPending || task.Message != "Task created successfully" {
		t.Fatalf("created: %+v", task)
	}
	var events []Event
	final, err := c.Watch(ctx, task.TaskID, func(ev Event) error { events = append(events, ev); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if final.Status != StatusCompleted || final.Progress.Percentage != 100 || final.Progress.TotalNodes == 0 {
		t.Fatalf("final: %+v", final.Progress)
	}
	last := events[len(events)-1]
	if last.Type != "finished" || len(events) < 2 {
		t.Fatalf("events: %d, last %s", len(events), last.Type)
	}
	prev := -1
	for _, ev := range events {
		n, err := strconv.Atoi(ev.ID)
		if err != nil || n < prev {
			t.Fatalf("ids not increasing: %q after %d", ev.ID, prev)
		}
		prev = n
	}
	// An ended task: one finished event.
	var again []Event
	if _, err := c.Watch(ctx, task.TaskID, func(ev Event) error { again = append(again, ev); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(again) != 1 || again[0].Type != "finished" {
		t.Fatalf("ended task gave %d events", len(again))
	}
	got, err := c.WaitForCompletion(ctx, task.TaskID, 100*time.Millisecond)
	if err != nil || got.TaskID != task.TaskID {
		t.Fatalf("wait: %v", err)
	}
}

func TestLiveFailedTaskIsATaskFailedError(t *testing.T) {
	c := liveClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	task, err := c.CreateTask(ctx, CreateTaskRequest{Images: []string{"registry.example.com/missing/go:1"}, NodeSelector: selector()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.WaitForCompletion(ctx, task.TaskID, 200*time.Millisecond)
	var failed *TaskFailedError
	if !errors.As(err, &failed) || failed.Task.Status != StatusFailed || len(failed.Task.FailedNodeDetails) == 0 {
		t.Fatalf("want TaskFailedError with nodes, got %v", err)
	}
	results, err := c.AllTaskNodes(ctx, task.TaskID, "failed", "")
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(results)) != failed.Task.FailedNodeDetailsTotal || len(results) == 0 {
		t.Fatalf("%d failed results, the view counts %d", len(results), failed.Task.FailedNodeDetailsTotal)
	}
	for _, r := range results {
		if r.Status != "failed" || r.Reason == nil || r.Image != "registry.example.com/missing/go:1" {
			t.Fatalf("unexpected result %+v", r)
		}
	}
	one, err := c.ListTaskNodes(ctx, task.TaskID, NodeResultOptions{Limit: 1})
	if err != nil || len(one.Nodes) != 1 || one.Total != int64(failed.Task.Progress.TotalNodes) {
		t.Fatalf("first page of one: %+v, %v", one, err)
	}
}

func TestLiveCancelConflictNotFoundValidation(t *testing.T) {
	c := liveClient(t)
	ctx := context.Background()
	task, err := c.CreateTask(ctx, CreateTaskRequest{Images: []string{"slow/go-cancel:1"}, NodeSelector: selector()})
	if err != nil {
		t.Fatal(err)
	}
	if a, err := c.CancelTask(ctx, task.TaskID); err != nil || a.Status != StatusCancelled {
		t.Fatalf("cancel: %+v %v", a, err)
	}
	if _, err := c.CancelTask(ctx, task.TaskID); !errors.Is(err, ErrConflict) {
		t.Fatalf("second cancel: %v", err)
	}
	if _, err := c.GetTask(ctx, "task-20200101-nosuch"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	_, err = c.CreateTask(ctx, CreateTaskRequest{Images: []string{"nginx::bad"}})
	var apiErr *APIError
	if !errors.Is(err, ErrValidation) || !errors.As(err, &apiErr) || !strings.Contains(apiErr.Body.Details, "images[0]") {
		t.Fatalf("validation: %v", err)
	}
	if _, err := c.ListTasks(ctx, ListOptions{Status: "done"}); !errors.Is(err, ErrValidation) {
		t.Fatalf("bad status filter: %v", err)
	}
	page, err := c.ListTasks(ctx, ListOptions{Status: StatusCancelled, Limit: 5})
	if err != nil || page.Limit != 5 || len(page.Tasks) == 0 {
		t.Fatalf("list: %+v %v", page, err)
	}
	for _, tk := range page.Tasks {
		if tk.Status != StatusCancelled {
			t.Fatalf("filter ignored: %s", tk.Status)
		}
	}
}

func TestLiveScheduledTasks(t *testing.T) {
	c := liveClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.ListScheduledTasks(ctx, 10, 0); err != nil {
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.StatusCode == 404 && apiErr.Body.Error == "Not found" {
			t.Skip("this server has no /api/v1/scheduled-tasks")
		}
		t.Fatal(err)
	}
	s, err := c.CreateScheduledTask(ctx, ScheduledTaskRequest{
		Name:       "go-sdk",
		CronExpr:   "0 3 * * *",
		TaskConfig: map[string]interface{}{"images": []string{"nginx:1.25"}, "nodeSelector": selector()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = c.DeleteScheduledTask(context.Background(), s.ID) }()
	if !s.Enabled || s.NextExecutionAt == nil {
		t.Fatalf("created: %+v", s)
	}
	desc := "nightly"
	u, err := c.UpdateScheduledTask(ctx, s.ID, ScheduledTaskRequest{Description: &desc, TaskConfig: map[string]interface{}{"batchSize": 3}})
	if err != nil || u.Description != "nightly" || u.TaskConfig["batchSize"] != float64(3) {
		t.Fatalf("update: %+v %v", u, err)
	}
	if _, err := c.DisableScheduledTask(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if g, err := c.GetScheduledTask(ctx, s.ID); err != nil || g.Enabled || g.NextExecutionAt != nil {
		t.Fatalf("disabled: %+v %v", g, err)
	}
	if _, err := c.EnableScheduledTask(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	trig, err := c.TriggerScheduledTask(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForCompletion(ctx, trig.TaskID, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	execs, err := c.ListExecutions(ctx, s.ID, 10, 0)
	if err != nil || execs.Total < 1 || execs.Executions[0].TaskID != trig.TaskID {
		t.Fatalf("executions: %+v %v", execs, err)
	}
	if e, err := c.GetExecution(ctx, s.ID, execs.Executions[0].ID); err != nil || e.ScheduledTaskID != s.ID {
		t.Fatalf("execution: %+v %v", e, err)
	}
	if _, err := c.DeleteScheduledTask(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetScheduledTask(ctx, s.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
}

func TestLivePlanAndCoverage(t *testing.T) {
	c := liveClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req := CreateTaskRequest{Images: []string{"go-plan/app:1"}, BatchSize: 4, NodeSelector: selector()}
	plan, err := c.PlanTask(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.DryRun || plan.SelectedNodes == 0 || plan.Jobs != plan.SelectedNodes || len(plan.Images) != 1 {
		t.Fatalf("plan: %+v", plan)
	}
	cov, err := c.Coverage(ctx, req.Images, selector(), "")
	if err != nil {
		t.Fatal(err)
	}
	if cov.TotalNodes != plan.SelectedNodes || cov.Percentage != 0 || len(cov.Nodes) != cov.TotalNodes {
		t.Fatalf("coverage before: %+v", cov)
	}
	task, err := c.CreateTask(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	final, err := c.WaitForCompletion(ctx, task.TaskID, 100*time.Millisecond)
	if err != nil || final.Progress.TotalNodes != plan.SelectedNodes {
		t.Fatalf("run: %v %+v", err, final)
	}
	for {
		cov, err = c.Coverage(ctx, req.Images, selector(), "")
		if err != nil {
			t.Fatal(err)
		}
		if cov.Percentage == 100 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("coverage never reached 100%%: %+v", cov)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Every node of the run has a learned pull speed, listed slowest first.
	for {
		stats, err := c.NodeStats(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if stats.Total >= plan.SelectedNodes {
			for i := 1; i < len(stats.Nodes); i++ {
				if stats.Nodes[i].SecondsPerPull > stats.Nodes[i-1].SecondsPerPull {
					t.Fatalf("not slowest first: %+v", stats.Nodes)
				}
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the run's nodes were not learned: %+v", stats)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestLiveKeepWarmPolicy(t *testing.T) {
	c := liveClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := c.CreateKeepWarmPolicy(ctx, KeepWarmPolicyRequest{
		Name: "go-sdk", Images: []string{"go-keep/app:1"}, NodeSelector: selector(), BatchSize: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = c.DeleteKeepWarmPolicy(context.Background(), p.ID) }()
	for {
		got, err := c.GetKeepWarmPolicy(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cov := got.Coverage; cov != nil && cov.TotalNodes > 0 && cov.WarmNodes == cov.TotalNodes {
			run, err := c.GetTask(ctx, got.LastRuns[len(got.LastRuns)-1].TaskID)
			if err != nil || run.Trigger != "keep-warm" || run.KeepWarmPolicyID != p.ID {
				t.Fatalf("run: %v %+v", err, run)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("policy never warmed its nodes: %+v", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	off, err := c.DisableKeepWarmPolicy(ctx, p.ID)
	if err != nil || off.Enabled {
		t.Fatalf("disable: %v %+v", err, off)
	}
	if _, err := c.DeleteKeepWarmPolicy(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetKeepWarmPolicy(ctx, p.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}
