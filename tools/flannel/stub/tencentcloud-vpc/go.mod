// Stand-in for the Tencent Cloud VPC SDK, which the module proxy refuses.
// Only flannel's tencent-vpc backend imports it; the lab does not use that
// backend, so this provides just what it needs to compile.
module github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc

go 1.26.0
