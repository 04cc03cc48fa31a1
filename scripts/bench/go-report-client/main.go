// Command go-report-client times sequential EndpointReporter.Report calls the way a Go host probe
// (Weave Scope's probe is Go) makes them: grpc-go and the protoc-gen-go messages, each call timed
// until its answer is fully unmarshalled. Built by scripts/bench/build-go-client.sh from Debian's
// Go packages; run by scripts/bench/report-latency.ts, which reads the one JSON line it prints.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"math"
	"os"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "endpointreporter/pb"
)

type result struct {
	N           int     `json:"n"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	Connections int     `json:"connections"`
	Bytes       int     `json:"bytes"`
}

func main() {
	socket := flag.String("socket", "/var/run/scope/endpoint-reporter.sock", "the plugin's gRPC Unix socket")
	n := flag.Int("n", 100, "timed Report calls")
	warm := flag.Duration("warm", time.Second, "untimed calls first, for this long (and at least 3), as scripts/bench/timing.ts warms the other clients")
	clientID := flag.String("client-id", "bench-go", "ReportRequest.client_id")
	flag.Parse()
	if *n < 1 {
		log.Fatal("-n must be at least 1")
	}

	dialCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// grpc-go 1.33 (Debian bookworm) predates credentials/insecure.
	conn, err := grpc.DialContext(dialCtx, "unix://"+*socket, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		log.Fatalf("dial %s: %v", *socket, err)
	}
	defer conn.Close()
	client := pb.NewEndpointReporterClient(conn)
	request := &pb.ReportRequest{ClientId: *clientID}

	var report *pb.EndpointReport
	call := func() time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		report, err = client.Report(ctx, request)
		elapsed := time.Since(start)
		if err != nil {
			log.Fatalf("Report: %v", err)
		}
		return elapsed
	}
	for calls, start := 0, time.Now(); calls < 3 || time.Since(start) < *warm; calls++ {
		call()
	}
	times := make([]time.Duration, *n)
	for i := range times {
		times[i] = call()
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	// Nearest rank, as scripts/bench/timing.ts computes the other clients' quantiles.
	quantile := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(times)))) - 1
		return float64(times[i]) / float64(time.Millisecond)
	}
	out := result{N: *n, P50Ms: quantile(0.5), P99Ms: quantile(0.99), Connections: len(report.GetConnections()), Bytes: proto.Size(report)}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		log.Fatal(err)
	}
}
