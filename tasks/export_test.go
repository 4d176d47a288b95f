package tasks

// Exported for tests only.
var RetryDelayAt = retryDelay
