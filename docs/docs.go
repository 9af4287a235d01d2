// Package docs holds the published documents that kiln also uses, so that
// each exists once: the file in docs/ is what the program embeds.
package docs

import _ "embed" // for the schema below

// WorkflowTemplateSchema is workflow-template.schema.json, the JSON Schema
// (draft 2020-12) of workflow templates: kiln validates templates with it,
// serves it, and editors validate and complete templates with it.
//
//go:embed workflow-template.schema.json
var WorkflowTemplateSchema []byte
