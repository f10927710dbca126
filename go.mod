module github.com/wspubsub/wspubsub

go 1.26.8

require (
	github.com/HdrHistogram/hdrhistogram-go v1.1.2
	github.com/gorilla/websocket v1.5.3
	github.com/lesismal/nbio v1.6.8
)
