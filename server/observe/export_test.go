package observe

import "time"

// SetStuckAfter sets how long a write to l's writer may last before l
// drops what finds no room (StuckAfter).
func SetStuckAfter(l *LogWriter, d time.Duration) { l.stuckAfter = d }
