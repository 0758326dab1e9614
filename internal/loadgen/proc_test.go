package loadgen

import (
	"os"
	"testing"
	"time"
)

func TestReadProc(t *testing.T) {
	t.Parallel()
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) { // use some CPU
	}
	p, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.RSS < 1<<20 || p.PeakRSS < p.RSS || p.CPU <= 0 {
		t.Fatalf("ReadProc(self) = %+v", p)
	}
	if _, err := ReadProc(-1); err == nil {
		t.Fatal("ReadProc(-1) succeeded")
	}
}
