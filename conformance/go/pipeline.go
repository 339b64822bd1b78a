package main

// The multi-app ML pipeline (conformance/scenarios/ml_pipeline/README.md): this harness can
// play any of its four apps; the runner casts other SDKs in the other roles.

import (
	"fmt"

	"github.com/dapr/durabletask-go/api"
	"github.com/dapr/durabletask-go/task"
)

type dataset = map[string]any

func asInt(v any) int {
	if f, ok := v.(float64); ok {
		return int(f)
	}
	return 0
}

// app2: data

func ingestData(ctx task.ActivityContext) (any, error) {
	var in dataset
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	return dataset{"dataset": in["dataset"], "rows": 150}, nil
}

func engineerFeatures(ctx task.ActivityContext) (any, error) {
	var in dataset
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	in["features"] = 4
	return in, nil
}

// app3: training

func fitModel(ctx task.ActivityContext) (any, error) {
	var in dataset
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	return fmt.Sprintf("model-%v-%dx%d", in["dataset"], asInt(in["rows"]), asInt(in["features"])), nil
}

func evaluateModel(ctx task.ActivityContext) (any, error) { return 0.97, nil }

func trainModel(ctx *task.WorkflowContext) (any, error) {
	var features dataset
	if err := ctx.GetInput(&features); err != nil {
		return nil, err
	}
	var model string
	if err := ctx.CallActivity("fit_model", task.WithActivityInput(features)).Await(&model); err != nil {
		return nil, err
	}
	var accuracy float64
	if err := ctx.CallActivity("evaluate_model", task.WithActivityInput(model)).Await(&accuracy); err != nil {
		return nil, err
	}
	return map[string]any{"model": model, "accuracy": accuracy}, nil
}

// app4: serving

func loadModel(ctx task.ActivityContext) (any, error) {
	var name string
	err := ctx.GetInput(&name)
	return "loaded:" + name, err
}

func setupInference(ctx task.ActivityContext) (any, error) {
	var name string
	err := ctx.GetInput(&name)
	return "https://inference.local/" + name, err
}

// app1: the pipeline

func mlPipeline(ctx *task.WorkflowContext) (any, error) {
	var in dataset
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	var data, features dataset
	if err := ctx.CallActivity("ingest_data", task.WithActivityInput(in), task.WithActivityAppID("app2")).Await(&data); err != nil {
		return nil, err
	}
	if err := ctx.CallActivity("engineer_features", task.WithActivityInput(data), task.WithActivityAppID("app2")).Await(&features); err != nil {
		return nil, err
	}
	var trained map[string]any
	err := ctx.CallChildWorkflow("train_model",
		task.WithChildWorkflowInput(features),
		task.WithChildWorkflowInstanceID(string(ctx.ID)+"-train"),
		task.WithChildWorkflowAppID("app3"),
	).Await(&trained)
	if err != nil {
		return nil, err
	}
	model, _ := trained["model"].(string)
	var loaded, endpoint string
	if err := ctx.CallActivity("load_model", task.WithActivityInput(model), task.WithActivityAppID("app4")).Await(&loaded); err != nil {
		return nil, err
	}
	if err := ctx.CallActivity("setup_inference", task.WithActivityInput(model), task.WithActivityAppID("app4")).Await(&endpoint); err != nil {
		return nil, err
	}
	return map[string]any{"model": model, "accuracy": trained["accuracy"], "loaded": loaded, "endpoint": endpoint}, nil
}

// mlApps: what each app of the pipeline registers (also used by --serve APP).
var mlApps = map[string]func(*task.TaskRegistry) error{
	"app1": register(map[string]task.Workflow{"ml_pipeline": mlPipeline}, nil),
	"app2": register(nil, map[string]task.Activity{"ingest_data": ingestData, "engineer_features": engineerFeatures}),
	"app3": register(
		map[string]task.Workflow{"train_model": trainModel},
		map[string]task.Activity{"fit_model": fitModel, "evaluate_model": evaluateModel},
	),
	"app4": register(nil, map[string]task.Activity{"load_model": loadModel, "setup_inference": setupInference}),
}

func mlPipelineScenario() *scenario {
	return &scenario{
		apps:      map[string]func(*task.TaskRegistry) error{"app1": mlApps["app1"]},
		clientApp: "app1",
		drive: func(e *driveEnv) error {
			if err := schedule(e, "ml_pipeline", e.iid, dataset{"dataset": "iris"}); err != nil {
				return err
			}
			e.instances["train"] = string(e.iid + api.InstanceID("-train"))
			_, err := complete(e, e.iid)
			return err
		},
	}
}
