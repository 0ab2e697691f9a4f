"""Text of a program plan, a recommendation and a run's cost, for `harness.inspect --plan`
and bench/memory_plans.py (and for a GPU run to print the figure it is compared with)."""

from harness.measure import program_plan, recommend, step_cost
from harness.measure.plan_devices import PlanDevice

GIB = 2**30


def format_program_plan(plan: program_plan.ProgramPlan, device: PlanDevice) -> str:
    """One line per term with how exact it is, then the total against the device's memory."""
    lines = [
        f"{plan.setting.describe()}; batch {plan.global_batch} ({plan.per_device_batch} per "
        "device):"
    ]
    lines += [f"  {name:<12} {value / GIB:9.3f} GiB  ({how})" for name, value, how in plan.terms]
    verdict = plan.verdict(device.memory_bytes)
    lines.append(
        f"  {'total':<12} {plan.total / GIB:9.3f} GiB  {verdict} a {device.chip} "
        f"({device.memory_bytes / GIB:.1f} GiB, {100 * plan.total / device.memory_bytes:.0f}%)"
    )
    return "\n".join(lines)


def format_step(step: step_cost.StepTime, utilisation: float) -> str:
    return (
        f"step time (estimate): {step.total_s:.3f} s = {step.compute_s:.3f} s compute at "
        f"{utilisation:g} of peak + {step.collective_s:.3f} s collectives "
        f"({step.collective_bytes / 1e9:.2f} GB sent per device)"
    )


def format_run(cost: step_cost.RunCost, device: PlanDevice, images: int) -> str:
    return (
        f"run of {images:,} images ({cost.steps:,} steps) on {cost.devices} x {device.chip} "
        f"(estimate): {cost.accelerator_days:,.0f} {device.chip}-days, {cost.kwh:,.0f} kWh, "
        f"{cost.kg_co2e:,.0f} kgCO2e"
    )


def format_recommendation(found: recommend.Recommendation, device: PlanDevice, devices: int) -> str:
    head = f"cheapest setting on {devices} x {device.chip} ({found.tried} settings tried):"
    if found.plan is None:
        smallest = found.smallest
        least = (
            f"; the least memory of them is {smallest.total / GIB:.2f} GiB per device "
            f"({smallest.setting.describe()})"
            if smallest
            else ""
        )
        return f"{head} none fits{least}"
    return "\n".join(
        [
            head,
            format_program_plan(found.plan, device),
            format_step(found.step, step_cost.DEFAULT_UTILISATION),
        ]
    )
