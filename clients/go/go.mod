module github.com/prewarm/prewarm/clients/go

go 1.19
