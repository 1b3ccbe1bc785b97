module github.com/seine-cni/seine

go 1.26
