//! Talking to AWS from a plugin: SigV4 signing (checked against the official test suite),
//! credentials (the operator's secrets, or the instance's role through IMDSv2), and the query
//! protocol's calls with their errors mapped to the contract's and retried as AWS advises.
//! One implementation that the `aws` backend and the `cloudwatch` source share.

pub mod client;
pub mod credentials;
pub mod errors;
pub mod sigv4;
#[cfg(test)]
mod sigv4_vectors;
pub mod xml;

pub use client::{Client, Connection, Service, AUTOSCALING, CLOUDWATCH, EC2};
pub use errors::AwsError;
