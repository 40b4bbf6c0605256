// Package bench compares libeasdirect's Select with nacos-sdk-go v2's SelectOneHealthyInstance
// on the same instance lists, served by a local rnacos server, in one `go test -bench` run.
// It is a separate module so that the binding itself depends on nothing.
package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	easdirect "github.com/easdirect/libeasdirect/bindings/go"
	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
)

const group = "pai-eas" // where EAS registers its services in Nacos

var sizes = []int{3, 100, 1000}

// fixture is one service of n instances, as both clients see it.
type fixture struct {
	n       int
	service string
	ours    *easdirect.Client
	target  string // the target our client uses
}

var (
	server    *rnacos
	naming    naming_client.INamingClient
	fixtures  = map[int]*fixture{}
	setupErr  error
	listeners []net.Listener
)

func TestMain(m *testing.M) {
	code := 0
	func() {
		defer cleanup()
		setupErr = setup()
		if setupErr != nil {
			fmt.Fprintln(os.Stderr, "nacos comparison skipped:", setupErr)
		}
		code = m.Run()
	}()
	os.Exit(code)
}

func setup() error {
	bin := rnacosBinary()
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("no rnacos at %s (set EASDIRECT_RNACOS): %w", bin, err)
	}
	var err error
	if server, err = startRnacos(bin); err != nil {
		return err
	}
	tmp := filepath.Join(server.dir, "nacos-sdk-go")
	cc := constant.NewClientConfig(
		constant.WithTimeoutMs(5000),
		constant.WithNotLoadCacheAtStart(true),
		constant.WithLogDir(tmp), constant.WithCacheDir(tmp),
		constant.WithLogLevel("error"),
	)
	sc := []constant.ServerConfig{*constant.NewServerConfig("127.0.0.1", uint64(server.httpPort),
		constant.WithGrpcPort(uint64(server.httpPort+1000)))}
	if naming, err = clients.NewNamingClient(vo.NacosClientParam{ClientConfig: cc, ServerConfigs: sc}); err != nil {
		return fmt.Errorf("nacos-sdk-go: %w", err)
	}
	for _, n := range sizes {
		f, err := newFixture(n)
		if err != nil {
			return err
		}
		fixtures[n] = f
	}
	return nil
}

func cleanup() {
	for _, f := range fixtures {
		f.ours.Close()
	}
	if naming != nil {
		naming.CloseClient()
	}
	for _, l := range listeners {
		l.Close()
	}
	if server != nil {
		server.stop()
	}
}

// newFixture registers n instances (weight 100) and waits until nacos-sdk-go sees them all
// healthy; our client then reads the same list.
func newFixture(n int) (*fixture, error) {
	f := &fixture{n: n, service: fmt.Sprintf("bench_%d", n)}
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		if err := server.register(f.service, group, "127.0.0.1", l.Addr().(*net.TCPAddr).Port, 100); err != nil {
			return nil, err
		}
	}
	var hosts []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		insts, err := naming.SelectInstances(vo.SelectInstancesParam{
			ServiceName: f.service, GroupName: group, Clusters: []string{"DEFAULT"}, HealthyOnly: true,
		})
		if err == nil && len(insts) == n {
			hosts = hosts[:0]
			for _, in := range insts {
				hosts = append(hosts, fmt.Sprintf("%s:%d", in.Ip, in.Port))
			}
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("nacos-sdk-go sees %d of %d instances of %s (%v)", len(insts), n, f.service, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := naming.SelectOneHealthyInstance(selectParam(f.service)); err != nil {
		return nil, err
	}

	// Our client reads rnacos itself when this build of libeasdirect has the Nacos source, else
	// the same list as a static target.
	f.target = fmt.Sprintf("nacos://127.0.0.1:%d/%s?group=%s", server.httpPort, f.service, group)
	c, err := easdirect.New(f.target)
	if errors.Is(err, easdirect.ErrInvalidArgument) && strings.Contains(err.Error(), "not supported") {
		weighted := make([]string, len(hosts))
		for i, h := range hosts {
			weighted[i] = h + "*100"
		}
		f.target = "static://" + strings.Join(weighted, ",")
		c, err = easdirect.New(f.target)
	}
	if err != nil {
		return nil, err
	}
	f.ours = c
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		return nil, err
	}
	if list, err := c.Instances(); err != nil || len(list) != n {
		return nil, fmt.Errorf("libeasdirect sees %d of %d instances of %s (%v)", len(list), n, f.service, err)
	}
	return f, nil
}

func selectParam(service string) vo.SelectOneHealthInstanceParam {
	return vo.SelectOneHealthInstanceParam{ServiceName: service, GroupName: group, Clusters: []string{"DEFAULT"}}
}

func fixtureOf(b *testing.B, n int) *fixture {
	if setupErr != nil {
		b.Skip(setupErr)
	}
	return fixtures[n]
}

func source(f *fixture) string {
	if strings.HasPrefix(f.target, "nacos://") {
		return "rnacos via nacos://"
	}
	return "rnacos list as static://"
}

// BenchmarkSelectOne picks one instance per op: libeasdirect's Select and nacos-sdk-go's
// SelectOneHealthyInstance, on the same list served by rnacos.
func BenchmarkSelectOne(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("instances=%d/easdirect", n), func(b *testing.B) {
			f := fixtureOf(b, n)
			b.Logf("list: %s", source(f))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.ours.Select(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("instances=%d/nacos-sdk-go", n), func(b *testing.B) {
			f := fixtureOf(b, n)
			p := selectParam(f.service)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := naming.SelectOneHealthyInstance(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSelectOneParallel is the same from GOMAXPROCS goroutines at once.
func BenchmarkSelectOneParallel(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("instances=%d/easdirect", n), func(b *testing.B) {
			f := fixtureOf(b, n)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := f.ours.Select(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		b.Run(fmt.Sprintf("instances=%d/nacos-sdk-go", n), func(b *testing.B) {
			f := fixtureOf(b, n)
			p := selectParam(f.service)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := naming.SelectOneHealthyInstance(p); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
