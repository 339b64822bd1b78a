package main

// The multi-app ML pipeline (conformance/scenarios/ml_pipeline/README.md): this harness can
// play any of its four apps; the runner casts other SDKs in the other roles.

import (
	"fmt"
	"github.com/dapr/durabletask-go/workflow"
)

type dataset = map[string]any

func asInt(v any) int {
	if f, ok := v.(float64); ok {
		return int(f)
	}
	return 0
}

// app2: data

func ingestData(ctx workflow.ActivityContext) (any, error) {
	var in dataset
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	return dataset{"dataset": in["dataset"], "rows": 150}, nil
}

func engineerFeatures(ctx workflow.ActivityContext) (any, error) {
	var in dataset
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	in["features"] = 4
	return in, nil
}

// app3: training

func fitModel(ctx workflow.ActivityContext) (any, error) {
	var in dataset
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	return fmt.Sprintf("model-%v-%dx%d", in["dataset"], asInt(in["rows"]), asInt(in["features"])), nil
}

func evaluateModel(ctx workflow.ActivityContext) (any, error) { return 0.97, nil }

func trainModel(ctx *workflow.WorkflowContext) (any, error) {
	var features dataset
	if err := ctx.GetInput(&features); err != nil {
		return nil, err
	}
	var model string
	if err := ctx.CallActivity("fit_model", workflow.WithActivityInput(features)).Await(&model); err != nil {
		return nil, err
	}
	var accuracy float64
	if err := ctx.CallActivity("evaluate_model", workflow.WithActivityInput(model)).Await(&accuracy); err != nil {
		return nil, err
	}
	return map[string]any{"model": model, "accuracy": accuracy}, nil
}

// app4: serving

func loadModel(ctx workflow.ActivityContext) (any, error) {
	var name string
	err := ctx.GetInput(&name)
	return "loaded:" + name, err
}

func setupInference(ctx workflow.ActivityContext) (any, error) {
	var name string
	err := ctx.GetInput(&name)
	return "https://inference.local/" + name, err
}

// app1: the pipeline

func mlPipeline(ctx *workflow.WorkflowContext) (any, error) {
	var in dataset
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	var data, features dataset
	if err := ctx.CallActivity("ingest_data", workflow.WithActivityInput(in), workflow.WithActivityAppID("app2")).Await(&data); err != nil {
		return nil, err
	}
	if err := ctx.CallActivity("engineer_features", workflow.WithActivityInput(data), workflow.WithActivityAppID("app2")).Await(&features); err != nil {
		return nil, err
	}
	var trained map[string]any
	err := ctx.CallChildWorkflow("train_model",
		workflow.WithChildWorkflowInput(features),
		workflow.WithChildWorkflowInstanceID(string(ctx.ID())+"-train"),
		workflow.WithChildWorkflowAppID("app3"),
	).Await(&trained)
	if err != nil {
		return nil, err
	}
	model, _ := trained["model"].(string)
	var loaded, endpoint string
	if err := ctx.CallActivity("load_model", workflow.WithActivityInput(model), workflow.WithActivityAppID("app4")).Await(&loaded); err != nil {
		return nil, err
	}
	if err := ctx.CallActivity("setup_inference", workflow.WithActivityInput(model), workflow.WithActivityAppID("app4")).Await(&endpoint); err != nil {
		return nil, err
	}
	return map[string]any{"model": model, "accuracy": trained["accuracy"], "loaded": loaded, "endpoint": endpoint}, nil
}

// mlApps: what each app of the pipeline registers (also used by --serve APP).
var mlApps = map[string]func(*workflow.Registry) error{
	"app1": register(map[string]workflow.Workflow{"ml_pipeline": mlPipeline}, nil),
	"app2": register(nil, map[string]workflow.Activity{"ingest_data": ingestData, "engineer_features": engineerFeatures}),
	"app3": register(
		map[string]workflow.Workflow{"train_model": trainModel},
		map[string]workflow.Activity{"fit_model": fitModel, "evaluate_model": evaluateModel},
	),
	"app4": register(nil, map[string]workflow.Activity{"load_model": loadModel, "setup_inference": setupInference}),
}

func mlPipelineScenario() *scenario {
	return &scenario{
		apps:      map[string]func(*workflow.Registry) error{"app1": mlApps["app1"]},
		clientApp: "app1",
		drive: func(e *driveEnv) error {
			if err := schedule(e, "ml_pipeline", e.iid, dataset{"dataset": "iris"}); err != nil {
				return err
			}
			e.instances["train"] = string(e.iid + "-train")
			_, err := complete(e, e.iid)
			return err
		},
	}
}
