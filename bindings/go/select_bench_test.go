package easdirect

import (
	"fmt"
	"strings"
	"testing"
)

// staticTargetOf lists n instances 10.0.x.y:50000 of weight 100.
func staticTargetOf(n int) string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("10.0.%d.%d:50000", i/250, i%250+1)
	}
	return "static://" + strings.Join(hosts, ",")
}

func benchClient(b *testing.B, n int) *Client {
	c, err := New(staticTargetOf(n))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if _, err := c.Select(); err != nil { // warm the name cache
		b.Fatal(err)
	}
	return c
}

// BenchmarkSelect is one pick through cgo, including the Go Instance it returns.
func BenchmarkSelect(b *testing.B) {
	for _, n := range []int{3, 100, 1000} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			c := benchClient(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Select(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSelectParallel is Select from GOMAXPROCS goroutines at once.
func BenchmarkSelectParallel(b *testing.B) {
	for _, n := range []int{3, 100, 1000} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			c := benchClient(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Select(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkSelectExcluding is a retry's pick, with one id excluded.
func BenchmarkSelectExcluding(b *testing.B) {
	c := benchClient(b, 100)
	first, _ := c.Select()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.SelectExcluding(first.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCgoCallFloor is the cheapest call into the library (eas_abi_version): the part of
// every Select that is cgo's, not the pick's.
func BenchmarkCgoCallFloor(b *testing.B) {
	for range b.N {
		ABIVersion()
	}
}
