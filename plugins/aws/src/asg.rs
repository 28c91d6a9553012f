//! A scaling group is an EC2 Auto Scaling group: its capacity is the desired capacity (instances
//! that exist or are being launched), ready are the instances `InService` and `Healthy`.
//! Scale-out sets the desired capacity; scale-in never lowers it blindly — the agent's ranking
//! picks the instances, each terminated with `ShouldDecrementDesiredCapacity`, and an instance
//! that reports busy is never one of them.

use elastic_sdk::aws::xml::{self, Node};
use elastic_sdk::aws::{AwsError, Client, AUTOSCALING, EC2};
use elastic_sdk::scale_in::Candidate;
use elastic_sdk::{log, Capacity, PluginError, Target};

/// One instance of the group, as `DescribeAutoScalingGroups` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    /// `Pending`, `InService`, `Terminating`, `Standby`…
    pub lifecycle: String,
    /// `Healthy` or `Unhealthy`.
    pub health: String,
}

impl Instance {
    pub fn ready(&self) -> bool {
        self.lifecycle == "InService" && self.health == "Healthy"
    }

    /// On its way out (or out of service on purpose): neither counted nor chosen.
    pub fn leaving(&self) -> bool {
        ["Terminating", "Terminated", "Detaching", "Detached", "Standby", "EnteringStandby"]
            .iter()
            .any(|s| self.lifecycle.starts_with(s))
    }
}

/// The Auto Scaling group, as described.
#[derive(Debug, Clone, PartialEq)]
pub struct Asg {
    pub name: String,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub instances: Vec<Instance>,
}

impl Asg {
    pub fn members(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(|i| !i.leaving())
    }

    pub fn capacity(&self) -> Capacity {
        Capacity {
            replicas: self.desired,
            ready: self.members().filter(|i| i.ready()).count() as u32,
            tier: 0,
            tier_name: String::new(),
        }
    }
}

/// The group from a `DescribeAutoScalingGroups` answer; `None` when it lists none.
pub fn parse(body: &str) -> Result<Option<Asg>, PluginError> {
    let doc = xml::parse(body, "autoscaling DescribeAutoScalingGroups")?;
    let Some(result) = xml::find(doc.root(), "DescribeAutoScalingGroupsResult") else { return Ok(None) };
    let Some(group) = xml::list(result, "AutoScalingGroups").into_iter().next() else { return Ok(None) };
    let number = |n: Node, k: &str| xml::text(n, k).and_then(|v| v.parse().ok()).unwrap_or(0);
    let instances = xml::list(group, "Instances")
        .into_iter()
        .map(|i| Instance {
            id: xml::text(i, "InstanceId").unwrap_or_default(),
            lifecycle: xml::text(i, "LifecycleState").unwrap_or_default(),
            health: xml::text(i, "HealthStatus").unwrap_or_default(),
        })
        .collect();
    Ok(Some(Asg {
        name: xml::text(group, "AutoScalingGroupName").unwrap_or_default(),
        min: number(group, "MinSize"),
        max: number(group, "MaxSize"),
        desired: number(group, "DesiredCapacity"),
        instances,
    }))
}

/// One request: the group as AWS has it now.
pub fn describe(c: &mut Client, name: &str) -> Result<Asg, PluginError> {
    let params = vec![("AutoScalingGroupNames.member.1".to_string(), name.to_string())];
    let body = c.call(&AUTOSCALING, "DescribeAutoScalingGroups", &params)?;
    parse(&body)?.ok_or_else(|| {
        PluginError::BadConfig(format!(
            "Auto Scaling group `{name}` does not exist in {} (backend_config.auto_scaling_group, or the plugin's region)",
            c.connection.region
        ))
    })
}

/// Tells the agent the group's `MinSize`/`MaxSize` (contract 0.1.4 `cloud-limits`), so it never
/// asks for a capacity AWS would refuse. A refusal is logged, not fatal.
pub fn report_limits(group: &str, asg: &Asg) {
    if let Err(e) = elastic_sdk::cloud_limits::report(group, asg.min, asg.max.max(asg.min)) {
        log::warn(&format!("reporting {}'s MinSize/MaxSize to the agent: {e:?}", asg.name));
    }
}

/// Moves the group towards `target.replicas`; returns the capacity after and what was done.
pub fn scale(
    c: &mut Client,
    group: &str,
    asg_name: &str,
    target: Target,
) -> Result<(Capacity, String), PluginError> {
    let asg = describe(c, asg_name)?;
    report_limits(group, &asg);
    let mut done = Vec::new();
    let result = if target.replicas > asg.desired {
        grow(c, &asg, target.replicas, &mut done)
    } else if target.replicas < asg.desired {
        shrink(c, group, &asg, target.replicas, &mut done)
    } else {
        Ok(())
    };
    let result = result.and_then(|()| describe(c, asg_name));
    let detail = if done.is_empty() { "nothing to do".to_string() } else { done.join("; ") };
    match result {
        Err(e) if done.is_empty() => Err(e),
        Err(e) => Err(elastic_sdk::prefixed(e, &format!("after: {detail}; then "))),
        Ok(after) => Ok((after.capacity(), detail)),
    }
}

/// `SetDesiredCapacity`, the agent's cooldowns deciding (not the group's).
fn set_desired(c: &mut Client, asg: &Asg, to: u32) -> Result<(), PluginError> {
    let params = vec![
        ("AutoScalingGroupName".to_string(), asg.name.clone()),
        ("DesiredCapacity".into(), to.to_string()),
        ("HonorCooldown".into(), "false".into()),
    ];
    c.call(&AUTOSCALING, "SetDesiredCapacity", &params).map(|_| ()).map_err(|e| hint_bounds(e.into(), asg))
}

/// Tags the group with the decision (propagated to the instances it launches), sets the desired
/// capacity, and tags the instances already listed (AWS may list them only later: those get the
/// group's tags at launch).
fn grow(c: &mut Client, asg: &Asg, to: u32, done: &mut Vec<String>) -> Result<(), PluginError> {
    let decision = elastic_sdk::decision::id();
    let mut tags = vec![("elastic-agent".to_string(), elastic_sdk::about::hostname())];
    if let Some(id) = &decision {
        tags.push(("elastic-decision".into(), id.clone()));
    }
    let mut params = Vec::new();
    for (i, (k, v)) in tags.iter().enumerate() {
        let p = format!("Tags.member.{}", i + 1);
        params.push((format!("{p}.ResourceId"), asg.name.clone()));
        params.push((format!("{p}.ResourceType"), "auto-scaling-group".into()));
        params.push((format!("{p}.Key"), k.clone()));
        params.push((format!("{p}.Value"), v.clone()));
        params.push((format!("{p}.PropagateAtLaunch"), "true".into()));
    }
    c.call(&AUTOSCALING, "CreateOrUpdateTags", &params)?;
    set_desired(c, asg, to)?;
    done.push(format!("desired capacity of {} {} → {to}", asg.name, asg.desired));
    let after = describe(c, &asg.name)?;
    let new: Vec<String> = after
        .members()
        .filter(|i| !asg.instances.iter().any(|o| o.id == i.id))
        .map(|i| i.id.clone())
        .collect();
    if !new.is_empty() {
        if let Err(e) = create_tags(c, &new, &tags) {
            // The group's propagated tag still marks them; a missing tag is not worth a failure.
            log::warn(&format!("tagging {} with the decision: {e:?}", new.join(", ")));
        }
        done.push(format!("launching {}", new.join(", ")));
    }
    Ok(())
}

/// EC2 `CreateTags`: `tags` on every resource in `ids` (instances, volumes).
pub fn create_tags(c: &mut Client, ids: &[String], tags: &[(String, String)]) -> Result<(), AwsError> {
    let mut params = elastic_sdk::aws::client::list_params("ResourceId", ids);
    for (i, (k, v)) in tags.iter().enumerate() {
        params.push((format!("Tag.{}.Key", i + 1), k.clone()));
        params.push((format!("Tag.{}.Value", i + 1), v.clone()));
    }
    c.call(&EC2, "CreateTags", &params).map(|_| ())
}

/// Lowers the capacity by `asg.desired - to`: first by instances not launched yet, then by
/// terminating chosen instances — as the agent ranks them, those not in service first among the
/// removable — each with its desired capacity decremented. A busy one is never chosen.
fn shrink(
    c: &mut Client,
    group: &str,
    asg: &Asg,
    to: u32,
    done: &mut Vec<String>,
) -> Result<(), PluginError> {
    let members: Vec<&Instance> = asg.members().collect();
    let mut need = asg.desired - to;
    let unlaunched = asg.desired.saturating_sub(members.len() as u32).min(need);
    if unlaunched > 0 {
        // Not below the instances there are: AWS then has nothing to terminate on its own.
        let lower = asg.desired - unlaunched;
        set_desired(c, asg, lower)?;
        done.push(format!(
            "desired capacity of {} {} → {lower} (instances not launched yet)",
            asg.name, asg.desired
        ));
        need -= unlaunched;
    }
    if need == 0 {
        return Ok(());
    }
    let ids: Vec<String> = members.iter().map(|i| i.id.clone()).collect();
    let ranked = elastic_sdk::scale_in::rank(group, &ids)?;
    let (victims, kept) = elastic_sdk::choose_victims(&removal_order(&members, ranked), need as usize);
    if !kept.is_empty() {
        done.push(format!("kept {} busy: {}", kept.len(), kept.join(", ")));
    }
    for id in &victims {
        let params = vec![
            ("InstanceId".to_string(), id.clone()),
            ("ShouldDecrementDesiredCapacity".into(), "true".into()),
        ];
        // Never sent twice: a lost answer may mean it was carried out (the next describe tells).
        c.call_once(&AUTOSCALING, "TerminateInstanceInAutoScalingGroup", &params)
            .map_err(|e| hint_bounds(e.into(), asg))?;
        done.push(format!("terminated {id}"));
    }
    Ok(())
}

/// The agent's ranking, with the removable instances that serve nothing (pending, unhealthy)
/// moved first; the ranking's order otherwise, and a busy instance never removable.
pub fn removal_order(members: &[&Instance], mut ranked: Vec<Candidate>) -> Vec<Candidate> {
    let serving = |unit: &str| members.iter().any(|i| i.id == unit && i.ready());
    ranked.sort_by_key(|c| (!c.removable, serving(&c.unit)));
    ranked
}

/// AWS's refusal to leave the group's own bounds (a desired capacity outside them, a
/// termination below `MinSize`), with what to change.
fn hint_bounds(e: PluginError, asg: &Asg) -> PluginError {
    match e {
        PluginError::BadConfig(m)
            if m.contains("ValidationError")
                && (m.contains("SetDesiredCapacity") || m.to_ascii_lowercase().contains("min size")) =>
        {
            PluginError::BadConfig(format!(
                "{m} (the Auto Scaling group's MinSize {} / MaxSize {} must hold the agent group's min and max)",
                asg.min, asg.max
            ))
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIBED: &str = r#"<DescribeAutoScalingGroupsResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">
<DescribeAutoScalingGroupsResult><AutoScalingGroups><member>
  <AutoScalingGroupName>web</AutoScalingGroupName><MinSize>0</MinSize><MaxSize>5</MaxSize><DesiredCapacity>3</DesiredCapacity>
  <Instances>
    <member><InstanceId>i-1</InstanceId><LifecycleState>InService</LifecycleState><HealthStatus>Healthy</HealthStatus></member>
    <member><InstanceId>i-2</InstanceId><LifecycleState>Pending</LifecycleState><HealthStatus>Healthy</HealthStatus></member>
    <member><InstanceId>i-3</InstanceId><LifecycleState>Terminating</LifecycleState><HealthStatus>Healthy</HealthStatus></member>
  </Instances>
</member></AutoScalingGroups></DescribeAutoScalingGroupsResult></DescribeAutoScalingGroupsResponse>"#;

    #[test]
    fn capacity_is_the_desired_count_and_ready_the_healthy_in_service() {
        let asg = parse(DESCRIBED).unwrap().unwrap();
        assert_eq!((asg.name.as_str(), asg.min, asg.max, asg.desired), ("web", 0, 5, 3));
        let c = asg.capacity();
        assert_eq!((c.replicas, c.ready), (3, 1));
        assert_eq!(asg.members().count(), 2, "the terminating one is not a member");
        let none = DESCRIBED.replace(
            DESCRIBED
                .split("<AutoScalingGroups>")
                .nth(1)
                .unwrap()
                .split("</AutoScalingGroups>")
                .next()
                .unwrap(),
            "",
        );
        assert_eq!(parse(&none).unwrap(), None);
    }

    #[test]
    fn the_removable_instances_not_serving_go_first_and_a_busy_one_never() {
        let asg = parse(DESCRIBED).unwrap().unwrap();
        let members: Vec<&Instance> = asg.members().collect();
        let candidate = |unit: &str, removable: bool| Candidate {
            unit: unit.into(),
            removable,
            busy: None,
            activity: None,
            reason: String::new(),
        };
        // The agent ranks i-1 (in service) before i-2 (pending): pending goes first anyway.
        let order = removal_order(&members, vec![candidate("i-1", true), candidate("i-2", true)]);
        assert_eq!(order.iter().map(|c| c.unit.as_str()).collect::<Vec<_>>(), ["i-2", "i-1"]);
        // A pending instance that reports busy is not removable: it stays last, never chosen.
        let order = removal_order(&members, vec![candidate("i-1", true), candidate("i-2", false)]);
        let (victims, kept) = elastic_sdk::choose_victims(&order, 2);
        assert_eq!((victims, kept.len()), (vec!["i-1".to_string()], 1));
    }
}
