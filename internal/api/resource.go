package api

import (
	"net/http"
	"strconv"

	"github.com/kiln-build/kiln/internal/store"
)

// resource is one plain REST collection over a store table: list, show,
// create, update and delete. T is the model type, In the input struct of
// POST and PATCH (pointer fields, so that PATCH changes only what is
// given). What differs between resources — who may read and write, how
// input becomes an object — is supplied as functions; nil ones are
// skipped.
type resource[T, In any] struct {
	a        *API
	name     string // singular noun for messages: "file store"
	path     string // URL segment: "file-stores"
	table    store.Table[T]
	id       func(*T) int64
	filters  map[string]filterFunc
	readOnly []string // read-only names beyond the model's JSON fields

	// read decides who may list and show at all.
	read func(*call) error
	// narrow restricts a list query beyond the store's viewer, or refuses
	// the list (users are listed by admins only).
	narrow func(*call, *store.Query) error
	// visible hides objects the store's viewer lets through, such as other
	// users' tokens; hidden objects answer 404.
	visible func(*call, *T) bool

	// write decides who may create, update or delete at all.
	write func(*call) error
	// create turns input into a new object: defaults, references and the
	// caller's permission on the object it would create.
	create func(*call, *In) (*T, error)
	// insert stores a new object instead of table.Create and returns its
	// id and what to answer (tokens answer their secret once).
	insert func(*call, *T) (int64, any, error)
	// allow decides whether the caller may change or delete obj.
	allow func(*call, *T) error
	// update resolves the input's references and returns the change to
	// apply inside the store's update transaction.
	update func(*call, *In) (func(*T) error, error)
	// present tidies an object before it is answered, so that every route
	// shows it the same way (e.g. [] rather than null).
	present func(*T)
}

// tidy applies present to objects about to be answered.
func (r *resource[T, In]) tidy(objs ...*T) {
	if r.present == nil {
		return
	}
	for _, o := range objs {
		r.present(o)
	}
}

// routes returns the five routes of the collection.
func (r *resource[T, In]) routes() []Route {
	spec := specOf[In, T](r.readOnly...)
	list := Prefix + r.path + "/{$}"
	item := Prefix + r.path + "/{id}/{$}"
	return []Route{
		{"GET " + list, r.a.endpoint(r.list)},
		{"POST " + list, r.a.endpoint(func(c *call) error { return r.post(c, spec) })},
		{"GET " + item, r.a.endpoint(r.show)},
		{"PATCH " + item, r.a.endpoint(func(c *call) error { return r.patch(c, spec) })},
		{"DELETE " + item, r.a.endpoint(r.delete)},
	}
}

func (r *resource[T, In]) itemPath(id int64) string {
	return Prefix + r.path + "/" + strconv.FormatInt(id, 10) + "/"
}

func (r *resource[T, In]) list(c *call) error {
	if err := r.read(c); err != nil {
		return err
	}
	q, err := c.listQuery(r.filters)
	if err != nil {
		return err
	}
	if r.narrow != nil {
		if err := r.narrow(c, &q); err != nil {
			return err
		}
	}
	items, err := r.table.List(c.ctx(), q)
	if err != nil {
		return err
	}
	for i := range items {
		r.tidy(&items[i])
	}
	return replyPage(c, q, items, r.id, r.visible)
}

// get reads the object of the item path as the caller sees it.
func (r *resource[T, In]) get(c *call) (*T, error) {
	id, err := pathID(c, "id", r.name)
	if err != nil {
		return nil, err
	}
	obj, err := r.table.Get(c.ctx(), id, c.viewer())
	if isNotFound(err) || err == nil && r.visible != nil && !r.visible(c, obj) {
		return nil, notFound(r.name, id)
	}
	return obj, err
}

func (r *resource[T, In]) show(c *call) error {
	if err := r.read(c); err != nil {
		return err
	}
	if err := c.noQuery(); err != nil {
		return err
	}
	obj, err := r.get(c)
	if err != nil {
		return err
	}
	r.tidy(obj)
	return c.reply(http.StatusOK, obj)
}

func (r *resource[T, In]) post(c *call, spec *inputSpec) error {
	if err := r.write(c); err != nil {
		return err
	}
	if err := c.noQuery(); err != nil {
		return err
	}
	var in In
	if err := c.decode(spec, &in); err != nil {
		return err
	}
	obj, err := r.create(c, &in)
	if err != nil {
		return err
	}
	if r.insert != nil {
		id, out, err := r.insert(c, obj)
		if err != nil {
			return err
		}
		return c.created(r.itemPath(id), out)
	}
	if err := r.table.Create(c.ctx(), obj); err != nil {
		return err
	}
	r.tidy(obj)
	return c.created(r.itemPath(r.id(obj)), obj)
}

// target is the object a PATCH or DELETE acts on, once the caller may
// write, sent no query parameters, sees the object and may change it.
func (r *resource[T, In]) target(c *call) (*T, error) {
	if err := r.write(c); err != nil {
		return nil, err
	}
	if err := c.noQuery(); err != nil {
		return nil, err
	}
	obj, err := r.get(c)
	if err != nil {
		return nil, err
	}
	if err := r.allow(c, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// patch looks the object up before reading the body, so that a caller who
// may not see it learns nothing from validation errors.
func (r *resource[T, In]) patch(c *call, spec *inputSpec) error {
	obj, err := r.target(c)
	if err != nil {
		return err
	}
	var in In
	if err := c.decode(spec, &in); err != nil {
		return err
	}
	change, err := r.update(c, &in)
	if err != nil {
		return err
	}
	updated, err := r.table.Update(c.ctx(), r.id(obj), c.viewer(), change)
	if err != nil {
		return err
	}
	r.tidy(updated)
	return c.reply(http.StatusOK, updated)
}

func (r *resource[T, In]) delete(c *call) error {
	obj, err := r.target(c)
	if err != nil {
		return err
	}
	if err := r.table.Delete(c.ctx(), r.id(obj), c.viewer()); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// pathID reads a numeric id from the path; anything else is a 404, since
// no object has that path.
func pathID(c *call, param, what string) (int64, error) {
	s := c.r.PathValue(param)
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, errorf(http.StatusNotFound, "", "no %s at %s: items are addressed by numeric id", what, c.r.URL.Path)
	}
	return id, nil
}
