//! An idle worker's poll over every partition is one pipelined round trip; its
//! answer equals the per-partition scans, in partition order.

mod common;

use ff_core::contracts::{CreateExecutionArgs, ScanEligibleArgs};
use ff_core::{EngineBackend, ExecutionId, LaneId, SimClock};
use uuid::Uuid;

#[tokio::test]
async fn pipelined_heads_equal_per_partition_scans() {
    let b = common::backend(Some(SimClock::default())).await;
    let lane = LaneId::new("default");
    let partitions = b.partition_config().num_flow_partitions;
    assert!(b.scan_eligible_heads(&lane, 0..partitions).await.expect("empty poll").is_empty());
    // Two executions on partitions 1 and 5 (priorities differ on 5), none elsewhere.
    for (p, n, priority) in [(1u16, 1u64, 0), (5, 2, 0), (5, 3, 9)] {
        let id = ExecutionId::from_parts(p, Uuid::from_u64_pair(0x5ca, n));
        let mut args = CreateExecutionArgs::new(id, "ns", lane.clone(), "job");
        args.priority = priority;
        b.create_execution(args).await.expect("create");
    }
    let heads = b.scan_eligible_heads(&lane, 0..partitions).await.expect("poll");
    let mut expected = Vec::new();
    for partition in 0..partitions {
        let scan = ScanEligibleArgs { lane_id: lane.clone(), partition, limit: 1 };
        expected.extend(b.scan_eligible_executions(scan).await.expect("scan").into_iter().next());
    }
    assert_eq!(heads, expected);
    assert_eq!(heads.len(), 2);
    assert_eq!(heads[1], ExecutionId::from_parts(5, Uuid::from_u64_pair(0x5ca, 3)), "highest priority first");
    assert!(b.scan_eligible_heads(&lane, 2..5).await.expect("sub-range").is_empty());
    assert!(b.scan_eligible_heads(&LaneId::new("other"), 0..partitions).await.expect("lane").is_empty());
}
