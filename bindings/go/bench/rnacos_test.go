package bench

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// rnacos runs an rnacos server (a Nacos server written in Rust) on loopback for the benchmarks.
type rnacos struct {
	cmd      *exec.Cmd
	dir      string
	httpPort int // the Nacos HTTP API; gRPC (nacos-sdk-go v2) is httpPort+1000
	log      *os.File
}

// rnacosBinary is EASDIRECT_RNACOS, else the copy the repository's tooling installs.
func rnacosBinary() string {
	if p := os.Getenv("EASDIRECT_RNACOS"); p != "" {
		return p
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "easdirect", "tools", "rnacos-0.8.8", "bin", "rnacos")
}

// freePorts finds p such that p, p+1000 and p+2000 (HTTP, gRPC, console) are free on loopback.
func freePorts() (int, error) {
	for range 200 {
		p := 20000 + rand.IntN(20000)
		ok := true
		for _, q := range []int{p, p + 1000, p + 2000} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", q))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free ports for rnacos")
}

func startRnacos(bin string) (*rnacos, error) {
	dir, err := os.MkdirTemp("", "easdirect-rnacos-")
	if err != nil {
		return nil, err
	}
	port, err := freePorts()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "rnacos.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir // rnacos reads a .env from its working directory
	cmd.Env = append(os.Environ(),
		"RNACOS_SDK_HOST=127.0.0.1", // bind HTTP and gRPC to loopback, not 0.0.0.0
		"RNACOS_CONSOLE_HOST=127.0.0.1",
		fmt.Sprintf("RNACOS_HTTP_PORT=%d", port),
		fmt.Sprintf("RNACOS_GRPC_PORT=%d", port+1000),
		fmt.Sprintf("RNACOS_HTTP_CONSOLE_PORT=%d", port+2000),
		fmt.Sprintf("RNACOS_RAFT_NODE_ADDR=127.0.0.1:%d", port+1000),
		"RNACOS_DATA_DIR="+filepath.Join(dir, "data"),
		"RNACOS_HTTP_WORKERS=2",
		"RUST_LOG=warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &rnacos{cmd: cmd, dir: dir, httpPort: port, log: logf}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(r.url("/nacos/v1/ns/service/list?pageNo=1&pageSize=1"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return r, nil
			}
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("rnacos did not answer on 127.0.0.1:%d within 30 s (log in %s)", port, logf.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *rnacos) url(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", r.httpPort, path)
}

// register adds a persistent instance (rnacos probes persistent instances over TCP, so each one
// is a real listener) through the Nacos v1 HTTP API, retrying while the server settles.
func (r *rnacos) register(service, group, ip string, port int, weight float64) error {
	form := url.Values{
		"serviceName": {service}, "groupName": {group}, "clusterName": {"DEFAULT"},
		"ip": {ip}, "port": {fmt.Sprint(port)}, "weight": {fmt.Sprint(weight)},
		"ephemeral": {"false"}, "healthy": {"true"}, "enabled": {"true"},
	}
	var last string
	for range 50 {
		resp, err := http.Post(r.url("/nacos/v1/ns/instance"), "application/x-www-form-urlencoded",
			strings.NewReader(form.Encode()))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && bytes.Contains(b, []byte("ok")) {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("registering %s:%d in %s: %s", ip, port, service, last)
}

func (r *rnacos) stop() {
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.log.Close()
	os.RemoveAll(r.dir)
}
