package api

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/kiln-build/kiln/internal/model"
)

type itemInput struct {
	Name     *string          `json:"name"`
	Category *string          `json:"category"`
	Artifact *ref             `json:"artifact"`
	Data     *json.RawMessage `json:"data"`
}

var itemSpec = specOf[itemInput, model.CollectionItem]()

// itemRoutes: /collections/{id}/items/ lists a collection's items (for
// whoever sees the collection) and adds one; /collections/{id}/items/{item}/
// removes one. Contributors and owners of the collection's workspace
// change items; the store keeps item_count in the same transaction.
func (a *API) itemRoutes() []Route {
	list := Prefix + "collections/{id}/items/{$}"
	item := Prefix + "collections/{id}/items/{item}/{$}"
	return []Route{
		{"GET " + list, a.endpoint(listItems)},
		{"POST " + list, a.endpoint(addItem)},
		{"DELETE " + item, a.endpoint(removeItem)},
	}
}

// itemCollection reads the collection of the path as the caller sees it.
func itemCollection(c *call) (*model.Collection, error) {
	id, err := pathID(c, "id", "collection")
	if err != nil {
		return nil, err
	}
	coll, err := c.a.st.Collections().Get(c.ctx(), id, c.viewer())
	if isNotFound(err) {
		return nil, notFound("collection", id)
	}
	return coll, err
}

func listItems(c *call) error {
	if err := c.anyone(); err != nil {
		return err
	}
	coll, err := itemCollection(c)
	if err != nil {
		return err
	}
	q, err := c.listQuery(nil)
	if err != nil {
		return err
	}
	items, err := c.a.st.ListCollectionItems(c.ctx(), coll.ID, q)
	if err != nil {
		return err
	}
	return replyPage(c, q, items, func(it *model.CollectionItem) int64 { return it.ID }, nil)
}

// writableCollection is the collection of the path, when the caller may
// change its items.
func writableCollection(c *call) (*model.Collection, error) {
	if err := c.requireUser(); err != nil {
		return nil, err
	}
	if err := c.noQuery(); err != nil {
		return nil, err
	}
	coll, err := itemCollection(c)
	if err != nil {
		return nil, err
	}
	return coll, c.contributorOf(coll.WorkspaceID)
}

func addItem(c *call) error {
	coll, err := writableCollection(c)
	if err != nil {
		return err
	}
	var in itemInput
	if err := c.decode(itemSpec, &in); err != nil {
		return err
	}
	it := &model.CollectionItem{CollectionID: coll.ID, Data: emptyObject()}
	set(&it.Name, in.Name)
	set(&it.Category, in.Category)
	set(&it.Data, in.Data)
	if in.Artifact != nil {
		if in.Artifact.name != "" {
			return invalidField("artifact", "refer to the artifact by its numeric id")
		}
		it.ArtifactID = &in.Artifact.id
	}
	if err := c.a.st.AddCollectionItem(c.ctx(), it, c.viewer()); err != nil {
		return err
	}
	return c.created(Prefix+"collections/"+strconv.FormatInt(coll.ID, 10)+"/items/"+strconv.FormatInt(it.ID, 10)+"/", it)
}

func removeItem(c *call) error {
	coll, err := writableCollection(c)
	if err != nil {
		return err
	}
	id, err := pathID(c, "item", "collection item")
	if err != nil {
		return err
	}
	err = c.a.st.RemoveCollectionItem(c.ctx(), coll.ID, id, c.viewer())
	if isNotFound(err) {
		return notFound("item in this collection", id)
	}
	if err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}
