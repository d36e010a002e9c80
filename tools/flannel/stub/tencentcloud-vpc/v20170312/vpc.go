// Package v20170312 has the identifiers flannel's tencent-vpc backend uses.
// Every call fails: the backend cannot run in builds that use this stub.
package v20170312

import "errors"

var errStub = errors.New("tencent-vpc backend is not available in this build")

type Filter struct {
	Name   *string
	Values []*string
}

type Route struct {
	DestinationCidrBlock *string
	GatewayType          *string
	GatewayId            *string
	RouteId              *uint64
	RouteType            *string
	Enabled              *bool
}

type RouteTable struct {
	RouteTableId *string
	RouteSet     []*Route
}

type Client struct{}

func NewClientWithSecretId(secretId, secretKey, region string) (*Client, error) {
	return nil, errStub
}

type DescribeRouteTablesRequest struct {
	Filters []*Filter
}

type DescribeRouteTablesResponse struct {
	Response *struct {
		RouteTableSet []*RouteTable
	}
}

func NewDescribeRouteTablesRequest() *DescribeRouteTablesRequest {
	return &DescribeRouteTablesRequest{}
}

func (c *Client) DescribeRouteTables(request *DescribeRouteTablesRequest) (*DescribeRouteTablesResponse, error) {
	return nil, errStub
}

type DeleteRoutesRequest struct {
	RouteTableId *string
	Routes       []*Route
}

type DeleteRoutesResponse struct{}

func NewDeleteRoutesRequest() *DeleteRoutesRequest {
	return &DeleteRoutesRequest{}
}

func (c *Client) DeleteRoutes(request *DeleteRoutesRequest) (*DeleteRoutesResponse, error) {
	return nil, errStub
}

type CreateRoutesRequest struct {
	RouteTableId *string
	Routes       []*Route
}

type CreateRoutesResponse struct{}

func NewCreateRoutesRequest() *CreateRoutesRequest {
	return &CreateRoutesRequest{}
}

func (c *Client) CreateRoutes(request *CreateRoutesRequest) (*CreateRoutesResponse, error) {
	return nil, errStub
}
