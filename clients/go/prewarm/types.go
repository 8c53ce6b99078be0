package prewarm

import (
	"strings"
	"time"
)

// Task statuses.
const (
	StatusPending   = "pending"
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// CreateTaskRequest is the body of POST /api/v1/tasks. Only Images is required;
// zero values are left out so the server applies its defaults.
type CreateTaskRequest struct {
	Images            []string          `json:"images"`
	BatchSize         int               `json:"batchSize,omitempty"`
	NodeSelector      map[string]string `json:"nodeSelector,omitempty"`
	NodeNames         []string          `json:"nodeNames,omitempty"`
	Priority          int               `json:"priority,omitempty"`
	MaxRetries        int               `json:"maxRetries,omitempty"`
	RetryStrategy     string            `json:"retryStrategy,omitempty"`
	RetryDelay        *int              `json:"retryDelay,omitempty"`
	WebhookURL        string            `json:"webhookUrl,omitempty"`
	PullPolicy        string            `json:"pullPolicy,omitempty"`
	ImagePullSecrets  []string          `json:"imagePullSecrets,omitempty"`
	TolerateTaints    *bool             `json:"tolerateTaints,omitempty"`
	PinDigests        bool              `json:"pinDigests,omitempty"`
	TimeoutSeconds    int64             `json:"timeoutSeconds,omitempty"`
	PriorityClassName string            `json:"priorityClassName,omitempty"`
	// RegistryPullRate paces this task's pulls per registry host: "N/DURATION",
	// e.g. {"ghcr.io": "600/1m"}.
	RegistryPullRate map[string]string `json:"registryPullRate,omitempty"`
}

// Progress holds a task's node counts.
type Progress struct {
	TotalNodes     int     `json:"totalNodes"`
	CompletedNodes int     `json:"completedNodes"`
	FailedNodes    int     `json:"failedNodes"`
	SkippedNodes   int     `json:"skippedNodes"`
	CurrentBatch   int     `json:"currentBatch"`
	TotalBatches   int     `json:"totalBatches"`
	Percentage     float64 `json:"percentage"`
	// WaitingForRegistry counts nodes held back for registry pull tokens or a 429 backoff.
	WaitingForRegistry int `json:"waitingForRegistry"`
}

// FailedNodeDetail is one (node, image) pair that failed for good.
type FailedNodeDetail struct {
	NodeName  string    `json:"nodeName"`
	Image     string    `json:"image"`
	Reason    string    `json:"reason"`
	Message   string    `json:"message"`
	Timestamp time.Time `json:"timestamp"`
}

// SkippedNodeDetail is a node left out mid-task.
type SkippedNodeDetail struct {
	NodeName  string    `json:"nodeName"`
	Reason    string    `json:"reason"`
	Message   string    `json:"message"`
	Timestamp time.Time `json:"timestamp"`
}

// ImageStatus is one image's outcome across the task's nodes. PinnedDigest is
// set with PinDigests once the first pull fixed it; DigestDrift says the nodes
// resolved more than one digest (the tag moved during the task).
type ImageStatus struct {
	Image          string   `json:"image"`
	CompletedNodes int      `json:"completedNodes"`
	FailedNodes    int      `json:"failedNodes"`
	Digests        []string `json:"digests"`
	PinnedDigest   string   `json:"pinnedDigest,omitempty"`
	DigestDrift    bool     `json:"digestDrift"`
}

// Task is the task view of GET /api/v1/tasks/{id}.
type Task struct {
	TaskID            string            `json:"taskId"`
	Status            string            `json:"status"`
	Images            []string          `json:"images"`
	BatchSize         int               `json:"batchSize"`
	NodeSelector      map[string]string `json:"nodeSelector"`
	NodeNames         []string          `json:"nodeNames"`
	Priority          int               `json:"priority"`
	MaxRetries        int               `json:"maxRetries"`
	RetryStrategy     string            `json:"retryStrategy"`
	RetryDelay        int               `json:"retryDelay"`
	WebhookURL        *string           `json:"webhookUrl"`
	PullPolicy        string            `json:"pullPolicy"`
	ImagePullSecrets  []string          `json:"imagePullSecrets"`
	TolerateTaints    bool              `json:"tolerateTaints"`
	PinDigests        bool              `json:"pinDigests"`
	TimeoutSeconds    int64             `json:"timeoutSeconds"`
	PriorityClassName *string           `json:"priorityClassName"`
	// RegistryPullRate is the task's own pull rate per registry host, normalized.
	RegistryPullRate map[string]string `json:"registryPullRate,omitempty"`
	Progress         Progress          `json:"progress"`
	// FailedNodeDetails holds the first 100 failures; ListTaskNodes pages them all.
	FailedNodeDetails []FailedNodeDetail `json:"failedNodeDetails"`
	// FailedNodeDetailsTotal counts every failed (node, image) pair.
	FailedNodeDetailsTotal int64               `json:"failedNodeDetailsTotal"`
	SkippedNodeDetails     []SkippedNodeDetail `json:"skippedNodeDetails"`
	ImageStatuses          []ImageStatus       `json:"imageStatuses"`
	Reason                 *string             `json:"reason"`
	ErrorMessage           *string             `json:"errorMessage"`
	CreatedBy              string              `json:"createdBy"`
	CreatedAt              time.Time           `json:"createdAt"`
	StartedAt              *time.Time          `json:"startedAt"`
	FinishedAt             *time.Time          `json:"finishedAt"`
	EstimatedCompletion    *time.Time          `json:"estimatedCompletion"`
	// Trigger says what created the task: "api", "schedule" or "keep-warm".
	Trigger string `json:"trigger"`
	// KeepWarmPolicyID is the policy behind a "keep-warm" task.
	KeepWarmPolicyID string `json:"keepWarmPolicyId,omitempty"`
	// FromWorkload is the workload the task takes images and nodes from.
	FromWorkload *WorkloadRef `json:"fromWorkload,omitempty"`
	// ResolvedWorkload is what FromWorkload held when the task started (nil while pending).
	ResolvedWorkload *ResolvedWorkload `json:"resolvedWorkload,omitempty"`
	// Message is set on the answer of CreateTask only.
	Message string `json:"message,omitempty"`
}

// Ended reports whether the task can no longer change.
func (t *Task) Ended() bool {
	return t.Status == StatusCompleted || t.Status == StatusFailed || t.Status == StatusCancelled
}

// TaskList is a page of tasks, newest first.
type TaskList struct {
	Tasks  []Task `json:"tasks"`
	Total  int64  `json:"total"`
	Limit  int    `json:"limit"`
	Offset int64  `json:"offset"`
}

// NodeResult is one (node, image) pair of a task.
type NodeResult struct {
	NodeName string `json:"nodeName"`
	Image    string `json:"image"`
	// Status is pending, pulled, present, failed or skipped.
	Status    string     `json:"status"`
	Reason    *string    `json:"reason"`
	Message   *string    `json:"message"`
	Digest    *string    `json:"digest"`
	Timestamp *time.Time `json:"timestamp"`
}

// NodeResultList is a page of a task's (node, image) results, by node name.
type NodeResultList struct {
	Nodes  []NodeResult `json:"nodes"`
	Total  int64        `json:"total"`
	Limit  int          `json:"limit"`
	Offset int64        `json:"offset"`
}

// NodeResultOptions filters and pages ListTaskNodes; zero values use the
// server's defaults (every result, 100 per page).
type NodeResultOptions struct {
	Status string
	Image  string
	Limit  int
	Offset int64
}

// ListOptions selects a page; zero values use the server's defaults.
type ListOptions struct {
	Status string
	Limit  int
	Offset int64
}

// ActionResponse answers cancel and the scheduled-task actions.
type ActionResponse struct {
	TaskID  string `json:"taskId"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

// ProgressUpdate is the data of a "progress" stream event.
type ProgressUpdate struct {
	Progress
	Status              string     `json:"status"`
	EstimatedCompletion *time.Time `json:"estimatedCompletion"`
}

// Event is one message of a task's live stream: Type "progress" (Progress set)
// or "finished" (Task set, the final view). ID resumes the stream.
type Event struct {
	Type     string
	ID       string
	Progress *ProgressUpdate
	Task     *Task
}

// ScheduledTask is a cron-driven task template.
type ScheduledTask struct {
	ID                      string                 `json:"id"`
	Name                    string                 `json:"name"`
	Description             string                 `json:"description"`
	CronExpr                string                 `json:"cronExpr"`
	Timezone                string                 `json:"timezone"`
	Enabled                 bool                   `json:"enabled"`
	TaskConfig              map[string]interface{} `json:"taskConfig"`
	OverlapPolicy           string                 `json:"overlapPolicy"`
	TimeoutSeconds          int64                  `json:"timeoutSeconds"`
	StartingDeadlineSeconds int64                  `json:"startingDeadlineSeconds"`
	LastExecutionAt         *time.Time             `json:"lastExecutionAt"`
	NextExecutionAt         *time.Time             `json:"nextExecutionAt"`
	CreatedBy               string                 `json:"createdBy"`
	CreatedAt               time.Time              `json:"createdAt"`
	UpdatedAt               time.Time              `json:"updatedAt"`
}

// ScheduledTaskRequest creates a scheduled task (all fields) or updates one
// (only non-nil/non-empty fields are sent; TaskConfig merges into the stored one).
type ScheduledTaskRequest struct {
	Name                    string                 `json:"name,omitempty"`
	Description             *string                `json:"description,omitempty"`
	CronExpr                string                 `json:"cronExpr,omitempty"`
	Timezone                string                 `json:"timezone,omitempty"`
	Enabled                 *bool                  `json:"enabled,omitempty"`
	TaskConfig              map[string]interface{} `json:"taskConfig,omitempty"`
	OverlapPolicy           string                 `json:"overlapPolicy,omitempty"`
	TimeoutSeconds          *int64                 `json:"timeoutSeconds,omitempty"`
	StartingDeadlineSeconds *int64                 `json:"startingDeadlineSeconds,omitempty"`
	// ClearFromWorkload makes an update send "taskConfig": {"fromWorkload": null}:
	// the tasks stop taking images and nodes from a workload.
	ClearFromWorkload bool `json:"-"`
}

// ScheduledTaskList is a page of scheduled tasks.
type ScheduledTaskList struct {
	Tasks  []ScheduledTask `json:"tasks"`
	Total  int64           `json:"total"`
	Limit  int             `json:"limit"`
	Offset int64           `json:"offset"`
}

// Execution is one run (or skipped fire) of a scheduled task.
type Execution struct {
	ID              ExecutionID `json:"id"`
	ScheduledTaskID string      `json:"scheduledTaskId"`
	TaskID          string      `json:"taskId"`
	Status          string      `json:"status"`
	StartedAt       *time.Time  `json:"startedAt"`
	FinishedAt      *time.Time  `json:"finishedAt"`
	DurationSeconds *float64    `json:"durationSeconds"`
	ErrorMessage    string      `json:"errorMessage"`
	TriggeredAt     *time.Time  `json:"triggeredAt"`
	Trigger         string      `json:"trigger"`
}

// ExecutionID is an execution's id (1, 2, … per scheduled task), read from a
// JSON number or string.
type ExecutionID string

// UnmarshalJSON accepts 7 and "7".
func (id *ExecutionID) UnmarshalJSON(b []byte) error {
	*id = ExecutionID(strings.Trim(string(b), `"`))
	return nil
}

// ExecutionList is a page of executions, newest first.
type ExecutionList struct {
	Executions []Execution `json:"executions"`
	Total      int64       `json:"total"`
	Limit      int         `json:"limit"`
	Offset     int64       `json:"offset"`
}

// TaskPlan is the answer of a dry run: what a task would do now.
type TaskPlan struct {
	DryRun              bool           `json:"dryRun"`
	SelectedNodes       int            `json:"selectedNodes"`
	SelectedNodeNames   []string       `json:"selectedNodeNames"`
	SkippedByReason     map[string]int `json:"skippedByReason"`
	SkippedNodeDetails  []PlannedSkip  `json:"skippedNodeDetails"`
	Images              []PlannedImage `json:"images"`
	Jobs                int            `json:"jobs"`
	PullsNeeded         int            `json:"pullsNeeded"`
	APIWrites           int            `json:"apiWrites"`
	ETASeconds          *float64       `json:"etaSeconds"`
	EstimatedCompletion *time.Time     `json:"estimatedCompletion"`
	NodesWithSpeed      int            `json:"nodesWithSpeed"`
	SlowestNodes        []PlannedNode  `json:"slowestNodes"`
}

// PlannedNode is one of a plan's slowest nodes, with its learned pull speed.
type PlannedNode struct {
	NodeName        string  `json:"nodeName"`
	SecondsPerPull  float64 `json:"secondsPerPull"`
	Pulls           int     `json:"pulls"`
	ExpectedSeconds float64 `json:"expectedSeconds"`
}

// PlannedSkip is a node a plan leaves out (NotReady, Cordoned, Tainted), skips for
// its disk (DiskPressure, InsufficientDisk, with the numbers in Message) or finds
// warm (AlreadyWarm).
type PlannedSkip struct {
	NodeName string `json:"nodeName"`
	Reason   string `json:"reason"`
	Message  string `json:"message,omitempty"`
}

// PlannedImage is one image of a plan.
type PlannedImage struct {
	Image          string `json:"image"`
	NodesWithImage int    `json:"nodesWithImage"`
	PullsNeeded    int    `json:"pullsNeeded"`
}

// NodeStats is one node's learned pull speed.
type NodeStats struct {
	Node           string     `json:"node"`
	SecondsPerPull float64    `json:"secondsPerPull"`
	Samples        int        `json:"samples"`
	UpdatedAt      time.Time  `json:"updatedAt"`
	GoneSince      *time.Time `json:"goneSince,omitempty"`
}

// NodeStatsList is the answer of GET /api/v1/nodes/stats: slowest first.
type NodeStatsList struct {
	Nodes []NodeStats `json:"nodes"`
	Total int         `json:"total"`
}

// Coverage is the answer of GET /api/v1/coverage.
type Coverage struct {
	TotalNodes      int             `json:"totalNodes"`
	NotReadyNodes   int             `json:"notReadyNodes"`
	NodesAtImageCap int             `json:"nodesAtImageCap"`
	Percentage      float64         `json:"percentage"`
	Images          []ImageCoverage `json:"images"`
	Nodes           []NodeCoverage  `json:"nodes"`
	Groups          []CoverageGroup `json:"groups,omitempty"`
}

// ImageCoverage is the coverage of one image.
type ImageCoverage struct {
	Image          string  `json:"image"`
	NodesWithImage int     `json:"nodesWithImage"`
	Percentage     float64 `json:"percentage"`
}

// NodeCoverage lists the asked images one node lacks.
type NodeCoverage struct {
	NodeName string   `json:"nodeName"`
	Missing  []string `json:"missing"`
}

// CoverageGroup summarizes the nodes sharing one value of the groupBy label.
type CoverageGroup struct {
	Value      string  `json:"value"`
	Nodes      int     `json:"nodes"`
	WarmNodes  int     `json:"warmNodes"`
	Percentage float64 `json:"percentage"`
}

// KeepWarmPolicyRequest creates a keep-warm policy (Name and Images or
// FromWorkload required) or updates one (only non-nil/non-empty fields are
// sent; RemoveTaint "" turns gating off).
type KeepWarmPolicyRequest struct {
	Name             string            `json:"name,omitempty"`
	Enabled          *bool             `json:"enabled,omitempty"`
	Images           []string          `json:"images,omitempty"`
	NodeSelector     map[string]string `json:"nodeSelector,omitempty"`
	NodeNames        []string          `json:"nodeNames,omitempty"`
	TolerateTaints   *bool             `json:"tolerateTaints,omitempty"`
	PullPolicy       string            `json:"pullPolicy,omitempty"`
	ImagePullSecrets []string          `json:"imagePullSecrets,omitempty"`
	BatchSize        int               `json:"batchSize,omitempty"`
	Priority         *int              `json:"priority,omitempty"`
	FromWorkload     *WorkloadRef      `json:"fromWorkload,omitempty"`
	RemoveTaint      *string           `json:"removeTaint,omitempty"`
	// ClearFromWorkload makes an update send "fromWorkload": null: the policy
	// stops taking images and nodes from a workload.
	ClearFromWorkload bool `json:"-"`
}

// WorkloadRef names a workload whose pod template gives images and node constraints.
type WorkloadRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// ResolvedWorkload is what a task read from its workload when it started.
type ResolvedWorkload struct {
	Workload         WorkloadRef       `json:"workload"`
	Images           []string          `json:"images"`
	NodeSelector     map[string]string `json:"nodeSelector"`
	ImagePullSecrets []string          `json:"imagePullSecrets"`
	ResourceVersion  string            `json:"resourceVersion,omitempty"`
	Generation       int64             `json:"generation,omitempty"`
	ResolvedAt       *time.Time        `json:"resolvedAt,omitempty"`
	SelectedNodes    int               `json:"selectedNodes,omitempty"`
}

// KeepWarmPolicy keeps images on every matching node, including nodes that join later.
type KeepWarmPolicy struct {
	ID               string            `json:"id"`
	Name             string            `json:"name"`
	Enabled          bool              `json:"enabled"`
	Images           []string          `json:"images"`
	NodeSelector     map[string]string `json:"nodeSelector"`
	NodeNames        []string          `json:"nodeNames"`
	TolerateTaints   bool              `json:"tolerateTaints"`
	PullPolicy       string            `json:"pullPolicy"`
	ImagePullSecrets []string          `json:"imagePullSecrets"`
	BatchSize        int               `json:"batchSize"`
	Priority         int               `json:"priority"`
	FromWorkload     *WorkloadRef      `json:"fromWorkload,omitempty"`
	RemoveTaint      *string           `json:"removeTaint"`
	CreatedBy        string            `json:"createdBy"`
	CreatedAt        time.Time         `json:"createdAt"`
	UpdatedAt        time.Time         `json:"updatedAt"`
	Coverage         *PolicyCoverage   `json:"coverage"`
	LastRuns         []PolicyRun       `json:"lastRuns"`
}

// PolicyCoverage says how many of a policy's nodes hold all of its images.
type PolicyCoverage struct {
	TotalNodes int      `json:"totalNodes"`
	WarmNodes  int      `json:"warmNodes"`
	Percentage float64  `json:"percentage"`
	ColdNodes  []string `json:"coldNodes"`
	GatedNodes []string `json:"gatedNodes"`
}

// PolicyRun is one task a policy started, with its status when read.
type PolicyRun struct {
	TaskID         string    `json:"taskId"`
	CreatedAt      time.Time `json:"createdAt"`
	Nodes          int       `json:"nodes"`
	Status         *string   `json:"status"`
	CompletedNodes int       `json:"completedNodes"`
	FailedNodes    int       `json:"failedNodes"`
}

// KeepWarmPolicyList is a page of policies, newest first.
type KeepWarmPolicyList struct {
	Policies []KeepWarmPolicy `json:"policies"`
	Total    int64            `json:"total"`
	Limit    int              `json:"limit"`
	Offset   int64            `json:"offset"`
}
