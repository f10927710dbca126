package refhub

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Main runs the reference hub standalone until SIGINT or SIGTERM:
//
//	refhub --listen 127.0.0.1:8080 --key K --domain D [--subscribe-waits]
//	       [--ping-interval D --pong-timeout D]
func Main(args []string) error {
	fs := flag.NewFlagSet("refhub", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	key := fs.String("key", "", "publisher key (required)")
	domain := fs.String("domain", "bench", "domain the key is valid for")
	waits := fs.Bool("subscribe-waits", false, "let subscribers join a topic before its publisher")
	grace := fs.Duration("grace-period", 10*time.Second, "how long a topic outlives its publisher")
	queue := fs.Int("queue", 256, "messages queued per subscriber before it is cut off with 4000")
	ping := fs.Duration("ping-interval", 30*time.Second, "how often subscribers are pinged")
	pong := fs.Duration("pong-timeout", 0, "close with 4003 a subscriber silent for --ping-interval plus this long (0: never)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *key == "" {
		return errors.New("refhub: --key is required")
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := Listen(*listen, Config{
		Keys:           map[string]string{*key: *domain},
		SubscribeWaits: *waits,
		GracePeriod:    *grace,
		QueueLen:       *queue,
		PingPeriod:     *ping,
		PongTimeout:    *pong,
		Logger:         logger,
	})
	if err != nil {
		return err
	}
	logger.Warn("refhub: listening", "addr", s.Addr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(cctx); err != nil {
		return fmt.Errorf("refhub: cannot shut down cleanly: %w", err)
	}
	return nil
}
