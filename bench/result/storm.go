package result

// Storm is what the storm scenario measured: every subscriber, connected
// and live, is dropped by the load generator at one instant (a reset, no
// close frame) and reconnects at once, as after a deploy or a network blip.
// Once every one is back, each publisher sends one message; the storm is
// over when it has reached every subscriber.
type Storm struct {
	// Subscribers dropped.
	Subscribers int `json:"subscribers"`
	// BackSeconds is the time from the drop to the last reconnect's 101
	// (seen by the bench, which looks every 10 ms); ReceivingSeconds to
	// the last subscriber's receipt of the message published after that:
	// the figure a storm is judged by.
	BackSeconds      float64 `json:"back_s"`
	ReceivingSeconds float64 `json:"receiving_s"`
	// ServerCPUSeconds is the hub's CPU time (schedstat) over the storm,
	// drop to receipt, and ServerCPUPerReconnectUs that per reconnect.
	ServerCPUSeconds        float64 `json:"server_cpu_s"`
	ServerCPUPerReconnectUs float64 `json:"server_cpu_us_per_reconnect"`
}

// check adds what a storm run failed: subscribers not back or not
// receiving are counted by the reconnect and loss checks.
func (s *Storm) check(add func(string, ...any)) {
	if s.ReceivingSeconds <= 0 {
		add("the message published after the storm reached no subscriber")
	}
}
