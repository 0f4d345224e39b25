//! Conversions between wire messages and the manager's own types.

use crate::allocator::{Constraint, ConstraintOp};
use strata_proto::pb;

/// A wire constraint as the allocator's.
pub fn constraint_from_proto(c: &pb::Constraint) -> Constraint {
    use pb::constraint::Operator;
    let op = match Operator::try_from(c.operator).unwrap_or(Operator::Unique) {
        Operator::Unique => ConstraintOp::Unique,
        Operator::Cluster => ConstraintOp::Cluster,
        Operator::GroupBy => ConstraintOp::GroupBy,
        Operator::Like => ConstraintOp::Like,
        Operator::Unlike => ConstraintOp::Unlike,
        Operator::MaxPer => ConstraintOp::MaxPer,
    };
    Constraint {
        field: c.field.clone(),
        op,
        value: c.value.clone(),
    }
}
