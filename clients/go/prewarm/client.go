// Package prewarm is the Go SDK of the prewarm image prewarm service:
// tasks, live progress (Server-Sent Events) and scheduled tasks, on the
// standard library only.
//
//	c := prewarm.NewClient("http://prewarm.example.com", os.Getenv("PREWARM_TOKEN"))
//	task, err := c.CreateTask(ctx, prewarm.CreateTaskRequest{Images: []string{"nginx:1.25"}})
//	final, err := c.Watch(ctx, task.TaskID, func(ev prewarm.Event) error { ...; return nil })
package prewarm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Client talks to one prewarm server. The zero HTTPClient means a client
// without an overall timeout (streams are long-lived); use contexts for deadlines.
type Client struct {
	BaseURL    string
	Token      string
	HTTPClient *http.Client
}

// PoolIdleTimeout is how long an idle kept-alive connection stays pooled:
// less than the server's header-read timeout (10 s by default), which also
// closes an HTTP/1.1 connection waiting for its next request, so a request
// never goes out on a connection the server is closing.
const PoolIdleTimeout = 5 * time.Second

func pooledTransport() *http.Transport {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.IdleConnTimeout = PoolIdleTimeout
	return transport
}

// NewClient returns a client of baseURL; token may be empty (sent as
// Authorization: Bearer otherwise).
func NewClient(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token, HTTPClient: &http.Client{Transport: pooledTransport()}}
}

// NewClientWithCA is NewClient for an https:// server whose certificate is
// checked against the PEM bundle in caCertFile instead of the system's
// authorities (PREWARM_CA_CERT in the CLI).
func NewClientWithCA(baseURL, token, caCertFile string) (*Client, error) {
	pem, err := os.ReadFile(caCertFile)
	if err != nil {
		return nil, fmt.Errorf("prewarm: reading the CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("prewarm: %s holds no PEM certificate", caCertFile)
	}
	transport := pooledTransport()
	transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c := NewClient(baseURL, token)
	c.HTTPClient = &http.Client{Transport: transport}
	return c, nil
}

func (c *Client) httpClient() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return http.DefaultClient
}

func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, body interface{}) (*http.Request, error) {
	u := strings.TrimRight(c.BaseURL, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		buf, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out interface{}) error {
	req, err := c.newRequest(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		return apiError(resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding the answer (HTTP %d): %w", resp.StatusCode, err)
	}
	return nil
}

func apiError(code int, data []byte) *APIError {
	e := &APIError{StatusCode: code}
	if err := json.Unmarshal(data, &e.Body); err != nil || e.Body.Error == "" {
		e.Body = ErrorBody{Error: http.StatusText(code), Details: strings.TrimSpace(string(data))}
	}
	return e
}

func seg(s string) string { return url.PathEscape(s) }

func page(limit int, offset int64) url.Values {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if offset > 0 {
		q.Set("offset", strconv.FormatInt(offset, 10))
	}
	return q
}

// CreateTask stores a task; the answer's Message is "Task created successfully".
func (c *Client) CreateTask(ctx context.Context, req CreateTaskRequest) (*Task, error) {
	var t Task
	return &t, c.do(ctx, http.MethodPost, "/api/v1/tasks", nil, req, &t)
}

// PlanTask answers what CreateTask with req would do now (nodes, pulls, Jobs,
// ETA) without storing or creating anything.
func (c *Client) PlanTask(ctx context.Context, req CreateTaskRequest) (*TaskPlan, error) {
	var p TaskPlan
	q := url.Values{}
	q.Set("dryRun", "true")
	return &p, c.do(ctx, http.MethodPost, "/api/v1/tasks", q, req, &p)
}

// Coverage reports how many Ready nodes matching nodeSelector hold each image
// (from the nodes' reported images; the kubelet lists at most 50 per node).
// groupBy, when not empty, is a node label to summarize the nodes by.
func (c *Client) Coverage(ctx context.Context, images []string, nodeSelector map[string]string, groupBy string) (*Coverage, error) {
	q := url.Values{}
	q.Set("images", strings.Join(images, ","))
	if len(nodeSelector) > 0 {
		keys := make([]string, 0, len(nodeSelector))
		for k := range nodeSelector {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		pairs := make([]string, 0, len(keys))
		for _, k := range keys {
			pairs = append(pairs, k+"="+nodeSelector[k])
		}
		q.Set("nodeSelector", strings.Join(pairs, ","))
	}
	if groupBy != "" {
		q.Set("groupBy", groupBy)
	}
	var cov Coverage
	return &cov, c.do(ctx, http.MethodGet, "/api/v1/coverage", q, nil, &cov)
}

// NodeStats returns the nodes' learned pull speeds, slowest first (the
// nodes tasks start first); limit is 1..=1000.
func (c *Client) NodeStats(ctx context.Context, limit int) (*NodeStatsList, error) {
	q := url.Values{}
	q.Set("limit", strconv.Itoa(limit))
	var stats NodeStatsList
	return &stats, c.do(ctx, http.MethodGet, "/api/v1/nodes/stats", q, nil, &stats)
}

// GetTask returns one task view.
func (c *Client) GetTask(ctx context.Context, id string) (*Task, error) {
	var t Task
	return &t, c.do(ctx, http.MethodGet, "/api/v1/tasks/"+seg(id), nil, nil, &t)
}

// ListTasks returns a page of tasks, newest first.
func (c *Client) ListTasks(ctx context.Context, opts ListOptions) (*TaskList, error) {
	q := page(opts.Limit, opts.Offset)
	if opts.Status != "" {
		q.Set("status", opts.Status)
	}
	var l TaskList
	return &l, c.do(ctx, http.MethodGet, "/api/v1/tasks", q, nil, &l)
}

// ListTaskNodes returns a page of the task's (node, image) results.
func (c *Client) ListTaskNodes(ctx context.Context, id string, opts NodeResultOptions) (*NodeResultList, error) {
	q := page(opts.Limit, opts.Offset)
	if opts.Status != "" {
		q.Set("status", opts.Status)
	}
	if opts.Image != "" {
		q.Set("image", opts.Image)
	}
	var l NodeResultList
	return &l, c.do(ctx, http.MethodGet, "/api/v1/tasks/"+seg(id)+"/nodes", q, nil, &l)
}

// AllTaskNodes returns every (node, image) result of the task matching
// status and image (empty: any), fetched 1,000 at a time.
func (c *Client) AllTaskNodes(ctx context.Context, id, status, image string) ([]NodeResult, error) {
	var all []NodeResult
	for {
		l, err := c.ListTaskNodes(ctx, id, NodeResultOptions{Status: status, Image: image, Limit: 1000, Offset: int64(len(all))})
		if err != nil {
			return nil, err
		}
		all = append(all, l.Nodes...)
		if len(l.Nodes) == 0 || int64(len(all)) >= l.Total {
			return all, nil
		}
	}
}

// CancelTask cancels a pending or running task (ErrConflict if it ended).
func (c *Client) CancelTask(ctx context.Context, id string) (*ActionResponse, error) {
	var a ActionResponse
	return &a, c.do(ctx, http.MethodDelete, "/api/v1/tasks/"+seg(id), nil, nil, &a)
}

// WaitForCompletion polls every pollInterval until the task ends: the final
// view when it completed, a *TaskFailedError (with the view) when it failed or
// was cancelled, ctx.Err() when the context ends first.
func (c *Client) WaitForCompletion(ctx context.Context, id string, pollInterval time.Duration) (*Task, error) {
	if pollInterval <= 0 {
		pollInterval = 5 * time.Second
	}
	for {
		t, err := c.GetTask(ctx, id)
		if err != nil {
			return nil, err
		}
		if t.Ended() {
			return endResult(t)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

func endResult(t *Task) (*Task, error) {
	if t.Status == StatusCompleted {
		return t, nil
	}
	return t, &TaskFailedError{Task: t}
}

// Watch follows the task's live stream (Server-Sent Events), calling fn for
// every event (a non-nil error from fn stops the watch and is returned), and
// returns the final view with the same result rules as WaitForCompletion. A
// dropped connection is resumed with Last-Event-ID.
func (c *Client) Watch(ctx context.Context, id string, fn func(Event) error) (*Task, error) {
	lastID := ""
	failures := 0
	for {
		final, err := c.watchOnce(ctx, id, &lastID, fn)
		if final != nil {
			return endResult(final)
		}
		if err != nil {
			if _, ok := err.(*APIError); ok || ctx.Err() != nil || err == errStop {
				return nil, err
			}
			if se, ok := err.(stopError); ok {
				return nil, se.err
			}
			failures++
			if failures >= 5 {
				return nil, err
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(failures) * 500 * time.Millisecond):
		}
	}
}

var errStop = fmt.Errorf("stop")

type stopError struct{ err error }

func (s stopError) Error() string { return s.err.Error() }

// watchOnce reads one connection; returns the final task when it arrived.
func (c *Client) watchOnce(ctx context.Context, id string, lastID *string, fn func(Event) error) (*Task, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/api/v1/tasks/"+seg(id)+"/events", nil, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *lastID != "" {
		req.Header.Set("Last-Event-ID", *lastID)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		// Already read to its end: the store has the final view.
		return c.GetTask(ctx, id)
	}
	if resp.StatusCode >= 400 {
		data, _ := io.ReadAll(resp.Body)
		return nil, apiError(resp.StatusCode, data)
	}
	var final *Task
	err = ReadEvents(resp.Body, func(ev Event) error {
		if ev.ID != "" {
			*lastID = ev.ID
		}
		if fn != nil {
			if err := fn(ev); err != nil {
				return stopError{err}
			}
		}
		if ev.Type == "finished" {
			final = ev.Task
			return errStop
		}
		return nil
	})
	if final != nil {
		return final, nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}

// ReadEvents parses a text/event-stream body into task events until EOF or
// until fn returns an error (which is returned).
func ReadEvents(r io.Reader, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	var typ, id string
	var data []string
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			if len(data) > 0 {
				ev, err := decodeEvent(typ, id, strings.Join(data, "\n"))
				if err != nil {
					return err
				}
				if ev != nil {
					if err := fn(*ev); err != nil {
						return err
					}
				}
			}
			typ, data = "", nil
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value := line, ""
		if i := strings.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], strings.TrimPrefix(line[i+1:], " ")
		}
		switch field {
		case "event":
			typ = value
		case "data":
			data = append(data, value)
		case "id":
			id = value
		}
	}
	return sc.Err()
}

func decodeEvent(typ, id, data string) (*Event, error) {
	ev := &Event{Type: typ, ID: id}
	switch typ {
	case "progress":
		ev.Progress = &ProgressUpdate{}
		if err := json.Unmarshal([]byte(data), ev.Progress); err != nil {
			return nil, fmt.Errorf("bad progress event: %w", err)
		}
	case "finished":
		ev.Task = &Task{}
		if err := json.Unmarshal([]byte(data), ev.Task); err != nil {
			return nil, fmt.Errorf("bad finished event: %w", err)
		}
	default:
		return nil, nil
	}
	return ev, nil
}

// CreateScheduledTask stores a scheduled task.
func (c *Client) CreateScheduledTask(ctx context.Context, req ScheduledTaskRequest) (*ScheduledTask, error) {
	var s ScheduledTask
	return &s, c.do(ctx, http.MethodPost, "/api/v1/scheduled-tasks", nil, req, &s)
}

// ListScheduledTasks returns a page of scheduled tasks.
func (c *Client) ListScheduledTasks(ctx context.Context, limit int, offset int64) (*ScheduledTaskList, error) {
	var l ScheduledTaskList
	return &l, c.do(ctx, http.MethodGet, "/api/v1/scheduled-tasks", page(limit, offset), nil, &l)
}

// GetScheduledTask returns one scheduled task.
func (c *Client) GetScheduledTask(ctx context.Context, id string) (*ScheduledTask, error) {
	var s ScheduledTask
	return &s, c.do(ctx, http.MethodGet, "/api/v1/scheduled-tasks/"+seg(id), nil, nil, &s)
}

// UpdateScheduledTask changes the fields set in req; TaskConfig merges
// (req.ClearFromWorkload removes the task config's workload).
func (c *Client) UpdateScheduledTask(ctx context.Context, id string, req ScheduledTaskRequest) (*ScheduledTask, error) {
	if req.ClearFromWorkload {
		config := map[string]interface{}{"fromWorkload": nil}
		for k, v := range req.TaskConfig {
			config[k] = v
		}
		req.TaskConfig = config
	}
	var s ScheduledTask
	return &s, c.do(ctx, http.MethodPut, "/api/v1/scheduled-tasks/"+seg(id), nil, req, &s)
}

// DeleteScheduledTask deletes a scheduled task.
func (c *Client) DeleteScheduledTask(ctx context.Context, id string) (*ActionResponse, error) {
	var a ActionResponse
	return &a, c.do(ctx, http.MethodDelete, "/api/v1/scheduled-tasks/"+seg(id), nil, nil, &a)
}

// EnableScheduledTask enables a scheduled task.
func (c *Client) EnableScheduledTask(ctx context.Context, id string) (*ActionResponse, error) {
	var a ActionResponse
	return &a, c.do(ctx, http.MethodPut, "/api/v1/scheduled-tasks/"+seg(id)+"/enable", nil, nil, &a)
}

// DisableScheduledTask disables a scheduled task.
func (c *Client) DisableScheduledTask(ctx context.Context, id string) (*ActionResponse, error) {
	var a ActionResponse
	return &a, c.do(ctx, http.MethodPut, "/api/v1/scheduled-tasks/"+seg(id)+"/disable", nil, nil, &a)
}

// TriggerScheduledTask runs a scheduled task now; TaskID of the answer is the new task.
func (c *Client) TriggerScheduledTask(ctx context.Context, id string) (*ActionResponse, error) {
	var a ActionResponse
	return &a, c.do(ctx, http.MethodPost, "/api/v1/scheduled-tasks/"+seg(id)+"/trigger", nil, nil, &a)
}

// ListExecutions returns a page of a scheduled task's executions, newest first.
func (c *Client) ListExecutions(ctx context.Context, id string, limit int, offset int64) (*ExecutionList, error) {
	var l ExecutionList
	return &l, c.do(ctx, http.MethodGet, "/api/v1/scheduled-tasks/"+seg(id)+"/executions", page(limit, offset), nil, &l)
}

// GetExecution returns one execution of a scheduled task.
func (c *Client) GetExecution(ctx context.Context, id string, executionID ExecutionID) (*Execution, error) {
	var e Execution
	return &e, c.do(ctx, http.MethodGet, "/api/v1/scheduled-tasks/"+seg(id)+"/executions/"+seg(string(executionID)), nil, nil, &e)
}

// CreateKeepWarmPolicy creates a keep-warm policy; its first run starts at once.
func (c *Client) CreateKeepWarmPolicy(ctx context.Context, req KeepWarmPolicyRequest) (*KeepWarmPolicy, error) {
	var p KeepWarmPolicy
	return &p, c.do(ctx, http.MethodPost, "/api/v1/keep-warm", nil, req, &p)
}

// ListKeepWarmPolicies returns a page of policies, newest first.
func (c *Client) ListKeepWarmPolicies(ctx context.Context, limit int, offset int64) (*KeepWarmPolicyList, error) {
	var l KeepWarmPolicyList
	return &l, c.do(ctx, http.MethodGet, "/api/v1/keep-warm", page(limit, offset), nil, &l)
}

// GetKeepWarmPolicy returns one policy with its coverage and last runs.
func (c *Client) GetKeepWarmPolicy(ctx context.Context, id string) (*KeepWarmPolicy, error) {
	var p KeepWarmPolicy
	return &p, c.do(ctx, http.MethodGet, "/api/v1/keep-warm/"+seg(id), nil, nil, &p)
}

// UpdateKeepWarmPolicy changes the fields set in req (req.ClearFromWorkload
// removes the policy's workload).
func (c *Client) UpdateKeepWarmPolicy(ctx context.Context, id string, req KeepWarmPolicyRequest) (*KeepWarmPolicy, error) {
	var body interface{} = req
	if req.ClearFromWorkload {
		fields, err := withNull(req, "fromWorkload")
		if err != nil {
			return nil, err
		}
		body = fields
	}
	var p KeepWarmPolicy
	return &p, c.do(ctx, http.MethodPut, "/api/v1/keep-warm/"+seg(id), nil, body, &p)
}

// withNull is v as a JSON object with key set to null.
func withNull(v interface{}, key string) (map[string]interface{}, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var fields map[string]interface{}
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, err
	}
	fields[key] = nil
	return fields, nil
}

// DeleteKeepWarmPolicy deletes a policy (a run still going finishes).
func (c *Client) DeleteKeepWarmPolicy(ctx context.Context, id string) (*ActionResponse, error) {
	var a ActionResponse
	return &a, c.do(ctx, http.MethodDelete, "/api/v1/keep-warm/"+seg(id), nil, nil, &a)
}

// EnableKeepWarmPolicy enables a policy and returns it.
func (c *Client) EnableKeepWarmPolicy(ctx context.Context, id string) (*KeepWarmPolicy, error) {
	var p KeepWarmPolicy
	return &p, c.do(ctx, http.MethodPut, "/api/v1/keep-warm/"+seg(id)+"/enable", nil, nil, &p)
}

// DisableKeepWarmPolicy disables a policy and returns it.
func (c *Client) DisableKeepWarmPolicy(ctx context.Context, id string) (*KeepWarmPolicy, error) {
	var p KeepWarmPolicy
	return &p, c.do(ctx, http.MethodPut, "/api/v1/keep-warm/"+seg(id)+"/disable", nil, nil, &p)
}
